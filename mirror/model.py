"""The jointly trained Mirror model: ViCLIP (action understanding), ARP (embodied execution) and the two
alignment heads T_u / T_e, with one config and one checkpoint format.

ARP is conditioned on language through ViCLIP's *text tower*: the per-token features after ``ln_final``
(``TextTransformer.token_features``), read without gradient. This plays the role of ARP's frozen CLIP text
encoder (research/arp.md section 1) while keeping one text model in the system, so ``arp.lang_dim`` is forced
to the ViCLIP text width. ``policy_text: own`` gives ARP a text tower of its own instead (same architecture,
own weights, ``arp.text_encoder``, trained by L_EE only): then nothing but the alignment loss couples the
two models, the independent baseline of a mirror-vs-baseline comparison.

Checkpoint = a directory with ``model.safetensors`` (every tensor of the three modules under the prefixes
``viclip.``, ``arp.``, ``alignment.``) and ``config.json`` (the :class:`MirrorConfig`), plus optional
``extra.json``. Each file is written through a temporary file and renamed, and the weights and config carry
the same random ``checkpoint_id`` so a directory whose files come from two different saves is refused.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mirror.alignment import AlignmentConfig, MirrorAlignment
from mirror_common.errors import CheckpointError, MirrorError
from mirror_common.serialization import JsonConfig, atomic_write, reject_unknown_fields, write_json
from mirror_perception.configuration_viclip import ViCLIPConfig, get_config
from mirror_perception.errors import ConfigError
from mirror_perception.modeling_viclip import TextTransformer, ViCLIP
from mirror_perception.tokenizer import ClipTokenizer
from mirror_policy.arp.configuration import ARPConfig, ARPConfigError, named_config
from mirror_policy.arp.modeling import ARPPolicy

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
EXTRA_NAME = "extra.json"
FORMAT_VERSION = 1
POLICY_TEXT = ("shared", "own")  # where ARP's language features come from (MirrorConfig.policy_text)

__all__ = [
    "CONFIG_NAME",
    "EXTRA_NAME",
    "WEIGHTS_NAME",
    "CheckpointError",
    "MirrorConfig",
    "MirrorConfigError",
    "MirrorModel",
    "atomic_write",
]


class MirrorConfigError(MirrorError, ValueError):
    """A joint configuration that is inconsistent (e.g. clip length differs from the ViCLIP frame count)."""


@dataclass
class MirrorConfig(JsonConfig):
    """Everything needed to rebuild a :class:`MirrorModel`.

    ``instructions`` is the recognition vocabulary: every instruction string seen in training, in a fixed
    order. ``clip_frames`` frames of ``camera_for_video`` make one ViCLIP clip; it must equal the ViCLIP
    config's ``num_frames`` (its temporal embedding has exactly that many rows).
    """

    _json_what = "MirrorConfig"
    _json_error = MirrorConfigError

    viclip: ViCLIPConfig = field(default_factory=lambda: get_config("cpu_tiny"))
    arp: ARPConfig = field(default_factory=ARPConfig.cpu_tiny)
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    instructions: list[str] = field(default_factory=list)
    clip_frames: int = 8
    camera_for_video: str = "front"
    policy_text: str = "shared"  # ARP's language input: ViCLIP's text tower ("shared") or its own ("own")

    def __post_init__(self) -> None:
        self.instructions = list(self.instructions)
        if self.arp.lang_dim != self.viclip.text_width:
            self.arp = self.arp.replace(lang_dim=self.viclip.text_width)
        if self.arp.max_lang_len < self.viclip.context_length:
            self.arp = self.arp.replace(max_lang_len=self.viclip.context_length)
        self.validate()

    def validate(self) -> None:
        if self.clip_frames != self.viclip.num_frames:
            raise MirrorConfigError(
                f"clip_frames {self.clip_frames} must equal the ViCLIP config's num_frames "
                f"{self.viclip.num_frames}"
            )
        if not isinstance(self.camera_for_video, str) or not self.camera_for_video:
            raise MirrorConfigError("camera_for_video must name a camera")
        if self.policy_text not in POLICY_TEXT:
            raise MirrorConfigError(f"policy_text must be one of {POLICY_TEXT}, got {self.policy_text!r}")
        bad = [s for s in self.instructions if not isinstance(s, str) or not s.strip()]
        if bad:
            raise MirrorConfigError(f"instructions must be non-empty strings, got {bad[:3]}")
        duplicates = sorted({s for s in self.instructions if self.instructions.count(s) > 1})
        if duplicates:
            raise MirrorConfigError(f"duplicate instructions: {duplicates[:5]}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "viclip": self.viclip.to_dict(),
            "arp": self.arp.to_dict(),
            "alignment": asdict(self.alignment),
            "instructions": list(self.instructions),
            "clip_frames": self.clip_frames,
            "camera_for_video": self.camera_for_video,
            "policy_text": self.policy_text,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MirrorConfig:
        if not isinstance(data, Mapping):
            raise MirrorConfigError(f"a MirrorConfig must be a mapping, got {type(data).__name__}")
        reject_unknown_fields(cls, data, "MirrorConfig", MirrorConfigError)
        values = dict(data)
        try:
            if "viclip" in values:
                values["viclip"] = _as_viclip_config(values["viclip"])
            if "arp" in values:
                values["arp"] = _as_arp_config(values["arp"])
            if "alignment" in values and not isinstance(values["alignment"], AlignmentConfig):
                values["alignment"] = AlignmentConfig(**dict(values["alignment"]))
        except (ConfigError, ARPConfigError, TypeError, ValueError) as exc:
            raise MirrorConfigError(f"invalid MirrorConfig: {exc}") from exc
        return cls(**values)


def _as_viclip_config(value: Any) -> ViCLIPConfig:
    if isinstance(value, ViCLIPConfig):
        return value
    if isinstance(value, str):
        return get_config(value)
    return ViCLIPConfig.from_dict(dict(value))


def _as_arp_config(value: Any) -> ARPConfig:
    if isinstance(value, ARPConfig):
        return value
    if isinstance(value, str):
        return named_config(value)
    return ARPConfig.from_dict(dict(value))


class MirrorModel(nn.Module):
    """ViCLIP + ARP + mirror alignment heads (paper Fig. 4).

    ``u`` = ``viclip.video_features`` (B, viclip.embed_dim); ``e`` = ARP's last CCT block output
    (``info["e"]`` of ``arp.forward``, (B, arp.embed_dim)); ``alignment`` holds T_u and T_e.
    """

    def __init__(self, config: MirrorConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.viclip = ViCLIP(config.viclip)
        self.arp = ARPPolicy(config.arp)
        self.alignment = MirrorAlignment(config.viclip.embed_dim, config.arp.embed_dim, config.alignment)
        # ARP's own text tower is a part of the policy: its optimizer, DDP wrapper and checkpoint keys.
        if config.policy_text == "own":
            self.arp.add_module("text_encoder", TextTransformer(config.viclip))
        self.tokenizer = ClipTokenizer(context_length=config.viclip.context_length)

    @classmethod
    def from_names(
        cls,
        viclip: str = "cpu_tiny",
        arp: str = "cpu_tiny",
        instructions: Sequence[str] = (),
        **overrides: Any,
    ) -> MirrorModel:
        """A fresh model from named presets.

        ``overrides`` may hold ``viclip_overrides`` / ``arp_overrides`` (dicts of preset fields to replace),
        ``alignment`` (an :class:`AlignmentConfig` or a dict of its fields), ``clip_frames``,
        ``camera_for_video`` and ``policy_text``.
        """
        viclip_overrides = dict(overrides.pop("viclip_overrides", {}) or {})
        arp_overrides = dict(overrides.pop("arp_overrides", {}) or {})
        unknown = sorted(set(overrides) - {"alignment", "clip_frames", "camera_for_video", "policy_text"})
        if unknown:
            raise MirrorConfigError(f"unknown from_names override(s): {unknown}")
        viclip_config = get_config(viclip, **viclip_overrides)
        arp_config = named_config(arp)
        if arp_overrides:
            arp_config = arp_config.replace(**arp_overrides)
        alignment = overrides.get("alignment", AlignmentConfig())
        if not isinstance(alignment, AlignmentConfig):
            alignment = AlignmentConfig(**dict(alignment))
        config = MirrorConfig(
            viclip=viclip_config,
            arp=arp_config,
            alignment=alignment,
            instructions=list(instructions),
            clip_frames=overrides.get("clip_frames", viclip_config.num_frames),
            camera_for_video=overrides.get("camera_for_video", "front"),
            policy_text=overrides.get("policy_text", "shared"),
        )
        return cls(config)

    # ------------------------------------------------------------------------------------------ language
    @property
    def device(self) -> torch.device:
        return self.alignment.t_u.weight.device

    @property
    def policy_text_encoder(self) -> TextTransformer | None:
        """ARP's own text tower (``policy_text: own``), None when it reads ViCLIP's."""
        return getattr(self.arp, "text_encoder", None)

    def language_features(
        self, instructions: Sequence[str], allow_empty: bool = False
    ) -> tuple[Tensor, Tensor]:
        """ARP's language input: text-tower token features ``(B, L, text_width)`` and a ``(B, L)`` bool mask
        that is True up to and including the end-of-text token.

        ``L`` is the longest tokenised instruction of the batch (the tower is causal, so trailing padding
        never changes a real token's feature). ViCLIP's tower is read without gradient and in eval mode: ARP
        treats it as a frozen encoder; only the AU loss trains it. ARP's own tower (``policy_text: own``)
        runs with gradient where one is recorded: L_EE trains it with the policy. An empty instruction (start
        and end tokens only) is refused as a likely mistake unless ``allow_empty`` (the instruction-blind
        control).
        """
        if isinstance(instructions, str) or not instructions:
            raise ValueError("instructions must be a non-empty sequence of strings")
        if any(not isinstance(s, str) or not (s.strip() or (allow_empty and not s)) for s in instructions):
            raise ValueError("instructions must be non-empty strings")
        ids = self.tokenizer(list(instructions), context_length=self.config.viclip.context_length)
        eot = ids.argmax(dim=1)  # end-of-text is the largest id in CLIP's vocabulary
        length = int(eot.max()) + 1
        ids = ids[:, :length].to(self.device)
        own = self.policy_text_encoder
        if own is not None:
            features = own.token_features(ids)
        else:
            text = self.viclip.text_encoder
            was_training = text.training
            text.eval()
            try:
                with torch.no_grad():
                    features = text.token_features(ids)
            finally:
                text.train(was_training)
        mask = torch.arange(length, device=self.device)[None, :] <= eot.to(self.device)[:, None]
        return features, mask

    # ---------------------------------------------------------------------------------------- checkpoints
    def save_pretrained(self, directory: Path | str, extra: dict | None = None, fp16: bool = False) -> None:
        """Write ``model.safetensors`` and ``config.json`` (and ``extra.json`` when ``extra`` is given) into
        ``directory`` (created if needed). With ``fp16`` floating tensors are stored in half precision
        (loading casts them back to float32)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        checkpoint_id = uuid.uuid4().hex
        tensors: dict[str, Tensor] = {}
        for key, value in self.state_dict().items():
            value = value.detach().to("cpu")
            if fp16 and value.is_floating_point():
                value = value.half()
            tensors[key] = value.contiguous().clone()
        metadata = {"format": "pt", "checkpoint_id": checkpoint_id, "format_version": str(FORMAT_VERSION)}
        atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata=metadata))
        if extra is not None:
            write_json(directory / EXTRA_NAME, extra)
        config = {
            "format_version": FORMAT_VERSION,
            "checkpoint_id": checkpoint_id,
            "dtype": "float16" if fp16 else "float32",
            "model": self.config.to_dict(),
        }
        write_json(directory / CONFIG_NAME, config)  # written last: it names the weights it belongs to

    @staticmethod
    def read_config(directory: Path | str) -> tuple[MirrorConfig, str]:
        """The config stored in a checkpoint directory and its ``checkpoint_id``; :class:`CheckpointError`
        when the file is missing or malformed."""
        path = Path(directory) / CONFIG_NAME
        if not path.is_file():
            raise CheckpointError(f"no {CONFIG_NAME} in {directory} (not a MirrorModel checkpoint)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"cannot read {path}: {exc}") from exc
        if not isinstance(data, dict) or "model" not in data or "checkpoint_id" not in data:
            raise CheckpointError(f"{path} is not a MirrorModel config (needs 'model' and 'checkpoint_id')")
        if data.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{path} has format_version {data.get('format_version')!r}, this code reads {FORMAT_VERSION}"
            )
        try:
            config = MirrorConfig.from_dict(data["model"])
        except (MirrorConfigError, ConfigError, ARPConfigError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path} holds an invalid MirrorConfig: {exc}") from exc
        return config, str(data["checkpoint_id"])

    @staticmethod
    def read_extra(directory: Path | str) -> dict | None:
        """The ``extra.json`` of a checkpoint, or None when it has none."""
        path = Path(directory) / EXTRA_NAME
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"cannot read {path}: {exc}") from exc

    @classmethod
    def from_pretrained(cls, directory: Path | str, map_location: str | torch.device = "cpu") -> MirrorModel:
        """Rebuild a saved model, strictly: exact key set and shapes, matching checkpoint ids, finite
        weights. Raises :class:`CheckpointError` (nothing on disk is modified). Returned in eval mode."""
        directory = Path(directory)
        if not directory.is_dir():
            raise CheckpointError(f"checkpoint directory {directory} does not exist")
        config, checkpoint_id = cls.read_config(directory)
        weights = directory / WEIGHTS_NAME
        if not weights.is_file():
            raise CheckpointError(f"weights file not found: {weights}")
        try:
            state = load_file(str(weights), device="cpu")
            with safe_open(str(weights), framework="pt") as handle:
                metadata = handle.metadata() or {}
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read {weights}: {exc}") from exc
        if metadata.get("checkpoint_id") != checkpoint_id:
            raise CheckpointError(
                f"{weights} (checkpoint_id {metadata.get('checkpoint_id')!r}) and {CONFIG_NAME} "
                f"({checkpoint_id!r}) come from different saves; the directory is inconsistent"
            )
        model = cls(config)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        mismatched = [
            f"{k} (file {list(state[k].shape)} vs model {list(shape)})"
            for k, shape in expected.items()
            if k in state and tuple(state[k].shape) != shape
        ]
        if missing or unexpected or mismatched:
            raise CheckpointError(
                f"{weights} does not match its config: missing {missing[:8]}, unexpected {unexpected[:8]}, "
                f"shape mismatches {mismatched[:8]}"
            )
        bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise CheckpointError(f"{weights} holds NaN or infinite values in {bad[:8]}")
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        model.load_state_dict(state, strict=True)
        return model.to(map_location).eval()
