"""Typed configuration of ``train_joint``: dataclasses, loaded from a YAML/JSON file, then changed by dotted
``--set key.path=value`` overrides and first-class CLI flags (in that order), then validated once.

The ``viclip`` and ``arp`` sections name a preset (``preset``) and list the preset fields to replace; they
are checked by building the real :class:`ViCLIPConfig` / :class:`ARPConfig`, so a misspelt field fails at
start-up with the model config's own error.
"""

from __future__ import annotations

import json
import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from mirror.alignment import PAIRINGS, AlignmentConfig
from mirror.model import MirrorConfig
from mirror_common.errors import MirrorError
from mirror_common.serialization import JsonConfig
from mirror_perception.configuration_viclip import get_config
from mirror_perception.errors import ConfigError
from mirror_policy.arp.configuration import ARPConfigError, named_config
from sim_bridge.cameras import CAMERA_NAMES


class TrainConfigError(MirrorError, ValueError):
    """A training configuration file, override or value that is malformed or inconsistent."""


SAMPLING_MODES = ("peract", "keyframes")
AU_NEGATIVES = ("batch", "vocabulary")
INIT_PARTS = ("viclip", "arp", "alignment")  # the MirrorModel's top-level modules
# tf32: float32 weights and activations with TensorFloat-32 matmuls/convolutions on CUDA (same as fp32 on
# CPU). bf16: the ARP and ViCLIP forward passes run under bfloat16 autocast (matmuls and convolutions in
# bf16; the renderer, softmaxes, losses and the alignment stay float32); weights, gradients, optimizer
# states and checkpoints stay float32 (see trainer.precision_autocast).
# fp16: float16 autocast with a dynamic loss scale (torch.amp.GradScaler: the loss is scaled up before the
# backward so small gradients survive float16, steps with inf/NaN gradients are skipped and the scale adapts;
# ARP's own recipe trains with fp16 AMP). Weights, optimizer states and checkpoints stay float32 here too.
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


@dataclass
class DataConfig:
    """Where samples come from and how they are formed.

    root: RLBench/PerAct-layout dataset root (``--data``).
    tasks: restrict to these task names (empty = every task found).
    holdout_fraction: per task, this fraction of episodes (the highest episode indices) is held out for
        evaluation; at least one episode when the fraction is > 0 and the task has two or more.
    sampling: ``peract`` = PerAct's replay formation (chains of keyframe transitions from every
        ``demo_augmentation_every_n``-th frame, keyframe transitions repeated once per earlier start frame);
        ``keyframes`` = frame 0 and keyframes only, each transition once (ARP's trimmed data).
    cache: keep decoded samples in RAM (fast; the paper-size dataset needs tens of GB, so off there).
    num_workers: DataLoader processes assembling batches (0 = in the training process).
    augment: ARP/RVT SE(3) + RGB augmentation of EE batches.
    instruction_index: which variation description is the instruction (0 = PerAct/ARP's canonical one).
    video_camera: the camera whose video ViCLIP learns to recognise (the checkpoint's ``camera_for_video``,
        which the perception node then watches). The paper's ``front``; at 128^2 from scratch the wrist
        view tells a task's variations apart far better (README, "Which camera the video model watches").
    """

    root: str = ""
    tasks: list[str] = field(default_factory=list)
    holdout_fraction: float = 0.2
    sampling: str = "peract"
    demo_augmentation_every_n: int = 10
    cache: bool = True
    num_workers: int = 0
    augment: bool = True
    instruction_index: int = 0
    video_camera: str = "front"


ARP_LAYER_ADAPTATION = ("all", "weights")


@dataclass
class OptimConfig:
    """Per-group learning rates (paper Sec. 4.1, supplement Table 5, research/arp.md section 6).

    video_lr: ViCLIP video tower (and its temperature); text tower gets ``video_lr * text_lr_ratio``.
    align_lr: T_u / T_e heads.
    arp_lr_per_sample: ARP's LAMB learning rate per sample; the used rate is this x total batch
        (batch_size x world size), as ARP's train.py does.
    warmup_steps / min_lr_ratio: linear warm-up from 0, then cosine to ``min_lr_ratio`` x base at the end.
    grad_clip_norm: clip each model's gradient norm (0 = off; ARP uses none).
    arp_layer_adaptation: ``all`` applies LAMB's trust ratio to every ARP tensor (how the shipped model
        trained, and the default of configs written before this option); ``weights`` exempts the tensors that
        start at zero, biases, norm shifts and gains and the AdaLN / FiLM modulations, which then take plain
        Adam steps without weight decay. Under ``all`` those stayed below 2e-3 in the shipped model after
        22000 steps: its AdaLN cross blocks were still the identity (see :class:`mirror.training.lamb.Lamb`).
    """

    video_lr: float = 1e-5
    text_lr_ratio: float = 0.05
    viclip_weight_decay: float = 0.2
    viclip_betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    align_lr: float = 1e-4
    align_weight_decay: float = 0.0
    arp_lr_per_sample: float = 1.25e-5
    arp_weight_decay: float = 1e-4
    arp_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    arp_eps: float = 1e-6
    warmup_steps: int = 2000
    min_lr_ratio: float = 0.01
    grad_clip_norm: float = 0.0
    arp_layer_adaptation: str = "all"


@dataclass
class TrainConfig(JsonConfig):
    """Everything ``train_joint`` needs. ``L = L_AU + ee_weight * L_EE + align_weight * L_align``.

    au_update_prob: probability (seeded Bernoulli per step, identical on every rank) that a step is an AU
        step: L_AU is added and ViCLIP's optimizer steps (supplement C.3: "learning frequency of action
        recognition 20%"). On other steps u is computed without gradient, so the alignment trains T_u, T_e
        and ARP only.
    au_negatives: ``batch`` = the paper's in-batch video-text InfoNCE; ``vocabulary`` = each clip's
        cross-entropy over the run's whole instruction vocabulary. With a CPU batch of 6 clips most
        instructions are absent from a batch, so in-batch negatives rarely contrast two variations of one task
        and their clips collapse together; the vocabulary makes every variation a negative at every AU step.
    align_weight: 0 gives the no-mirror baseline with identical data, seeds and forward passes.
    gather_negatives: under DDP, score each pair against every rank's pairs (the global batch, the paper's
        192 negatives at 2 x 96) instead of the local batch only; no effect in one process.
    probe: alignment probing (paper Sec. 2): ViCLIP and ARP frozen in eval mode, only T_u / T_e train.
    init: a MirrorModel checkpoint whose weights start the run (required for meaningful probing).
    init_parts: which of ``init``'s weights to take, as state-dict prefixes (``arp``, ``viclip``,
        ``viclip.text_encoder``, ``alignment``, ...); the rest start fresh. E.g. a warm start that keeps a
        trained policy and its language tower but retrains the video tower on another camera.
    viclip_weights: an official ViCLIP checkpoint (InternVid ``.pth`` / ``*-hf`` ``model.safetensors``) loaded
        into the AU model before training, position tables resized to the configured input (the paper
        fine-tunes InternVid weights).
    viclip_temperature: if > 0, set ViCLIP's temperature to this at the start (paper: tau_vclip = 0.05).
    policy_text: ARP's language input: ``shared`` = ViCLIP's text tower (trained by L_AU only, read without
        gradient); ``own`` = a text tower of ARP's own (same architecture, trained by L_EE), so that nothing
        but the alignment loss couples the two models (the independent baseline).
    stop_after: end this invocation (with a checkpoint) once this many steps are done, 0 = run to ``steps``;
        for time-limited jobs that ``--resume`` later with the same schedule.
    batch_size: pairs (one AU clip + one EE sample) per process and step.
    """

    _json_what = "train config"
    _json_error = TrainConfigError

    data: DataConfig = field(default_factory=DataConfig)
    viclip: dict[str, Any] = field(default_factory=lambda: {"preset": "cpu_tiny"})
    arp: dict[str, Any] = field(default_factory=lambda: {"preset": "cpu_tiny"})
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int = 80000
    stop_after: int = 0
    batch_size: int = 96
    seed: int = 0
    ee_weight: float = 1.0
    align_weight: float = 0.5
    gather_negatives: bool = True
    au_update_prob: float = 0.2
    au_negatives: str = "batch"
    probe: bool = False
    init: str = ""
    init_parts: list[str] = field(default_factory=lambda: list(INIT_PARTS))
    policy_text: str = "shared"
    viclip_weights: str = ""
    viclip_temperature: float = 0.0
    out: str = "runs/joint"
    device: str = "auto"
    precision: str = "fp32"
    threads: int = 0
    log_every: int = 10
    eval_every: int = 500
    eval_pairs: int = 32
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    progress: bool = True

    # ---------------------------------------------------------------------------------- validation
    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise TrainConfigError(message)

        d, o = self.data, self.optim
        need(
            0.0 <= d.holdout_fraction < 1.0,
            f"data.holdout_fraction must be in [0, 1), got {d.holdout_fraction}",
        )
        need(
            d.sampling in SAMPLING_MODES, f"data.sampling must be one of {SAMPLING_MODES}, got {d.sampling!r}"
        )
        need(d.demo_augmentation_every_n >= 1, "data.demo_augmentation_every_n must be >= 1")
        need(d.num_workers >= 0, "data.num_workers must be >= 0")
        need(d.instruction_index >= 0, "data.instruction_index must be >= 0")
        need(
            d.video_camera in CAMERA_NAMES,
            f"data.video_camera must be one of {CAMERA_NAMES}, got {d.video_camera!r}",
        )
        need(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        need(self.stop_after >= 0, f"stop_after must be >= 0, got {self.stop_after}")
        need(bool(self.init_parts), "init_parts must name at least one part (default: all)")
        need(
            all(p.split(".")[0] in INIT_PARTS for p in self.init_parts),
            f"init_parts must start with one of {INIT_PARTS}, got {self.init_parts}",
        )
        need(self.viclip_temperature >= 0, "viclip_temperature must be >= 0 (0 = keep)")
        need(
            self.batch_size >= 2,
            f"batch_size must be >= 2 (contrastive losses need negatives), got {self.batch_size}",
        )
        need(self.ee_weight >= 0 and self.align_weight >= 0, "loss weights must be >= 0")
        need(
            0.0 <= self.au_update_prob <= 1.0, f"au_update_prob must be in [0, 1], got {self.au_update_prob}"
        )
        need(
            self.au_negatives in AU_NEGATIVES,
            f"au_negatives must be one of {AU_NEGATIVES}, got {self.au_negatives!r}",
        )
        need(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        need(self.threads >= 0, "threads must be >= 0")
        need(
            min(self.log_every, self.eval_every, self.checkpoint_every) >= 1, "*_every intervals must be >= 1"
        )
        need(self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1")
        need(self.eval_pairs >= 2, "eval_pairs must be >= 2")
        need(self.alignment.pairing in PAIRINGS, f"alignment.pairing must be one of {PAIRINGS}")
        for name in ("video_lr", "align_lr", "arp_lr_per_sample"):
            value = getattr(o, name)
            need(
                math.isfinite(value) and value >= 0, f"optim.{name} must be a finite number >= 0, got {value}"
            )
        need(o.text_lr_ratio >= 0.0, "optim.text_lr_ratio must be >= 0")
        need(len(o.viclip_betas) == 2 and len(o.arp_betas) == 2, "optimizer betas need two values")
        need(
            o.arp_layer_adaptation in ARP_LAYER_ADAPTATION,
            f"optim.arp_layer_adaptation must be one of {ARP_LAYER_ADAPTATION}, "
            f"got {o.arp_layer_adaptation!r}",
        )
        need(o.warmup_steps >= 0 and 0.0 <= o.min_lr_ratio <= 1.0, "bad warmup_steps / min_lr_ratio")
        need(o.grad_clip_norm >= 0, "optim.grad_clip_norm must be >= 0")
        need(
            not (self.probe and self.align_weight == 0),
            "probe mode trains only the alignment: align_weight > 0",
        )
        self.model_config([])  # the viclip / arp sections must build

    def model_config(self, instructions: list[str]) -> MirrorConfig:
        """The :class:`MirrorConfig` these settings describe, with the given recognition vocabulary."""
        viclip = dict(self.viclip)
        arp = dict(self.arp)
        try:
            viclip_config = get_config(str(viclip.pop("preset", "cpu_tiny")), **viclip)
            arp_config = named_config(str(arp.pop("preset", "cpu_tiny")))
            if arp:
                arp_config = arp_config.replace(
                    **{k: tuple(v) if isinstance(v, list) else v for k, v in arp.items()}
                )
            return MirrorConfig(
                viclip=viclip_config,
                arp=arp_config,
                alignment=AlignmentConfig(**asdict(self.alignment)),
                instructions=list(instructions),
                clip_frames=viclip_config.num_frames,
                camera_for_video=self.data.video_camera,
                policy_text=self.policy_text,
            )
        except (ConfigError, ARPConfigError, TypeError, ValueError) as exc:  # MirrorConfigError: ValueError
            raise TrainConfigError(f"invalid model settings: {exc}") from exc

    # ------------------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        config = _build(cls, data, "")
        config.validate()
        return config


# ---------------------------------------------------------------------------------- typed building
def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise TrainConfigError(f"{where or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise TrainConfigError(
            f"unknown setting(s) {[f'{where}{k}' for k in unknown]}; known: {sorted(known)}"
        )
    values = {name: _coerce(value, hints[name], f"{where}{name}") for name, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise TrainConfigError(f"invalid {where.rstrip('.') or 'config'}: {exc}") from exc


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if is_dataclass(hint):
        return _build(hint, value, where + ".")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise TrainConfigError(f"{where} must be true/false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise TrainConfigError(f"{where} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise TrainConfigError(f"{where} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if value is None:
            return ""
        raise TrainConfigError(f"{where} must be a string, got {value!r}")
    if origin is list:
        if isinstance(value, list | tuple):
            (item,) = typing.get_args(hint)
            return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        raise TrainConfigError(f"{where} must be a list, got {value!r}")
    if origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise TrainConfigError(f"{where} must be a mapping, got {value!r}")
    if origin in (typing.Union, types.UnionType):  # pragma: no cover - no optional fields today
        return value
    return value


# ------------------------------------------------------------------------------- files and overrides
def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML or JSON config file as a nested dict (empty file -> {})."""
    path = Path(path)
    if not path.is_file():
        raise TrainConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise TrainConfigError(f"cannot parse config file {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TrainConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value); the value is parsed as YAML (numbers, booleans, lists)."""
    if "=" not in text:
        raise TrainConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise TrainConfigError(f"override {text!r} has an empty key component")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise TrainConfigError(f"cannot parse the value of override {text!r}: {exc}") from exc
    return path, value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``data[path[0]][path[1]]... = value``, creating intermediate mappings."""
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise TrainConfigError(f"cannot set {'.'.join(path)}: {part} is not a section")
        node = child
    node[path[-1]] = value


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update``'s values, nested mappings merged key by key (neither is changed)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_train_config(
    path: str | Path | None = None, overrides: list[str] | None = None, flags: dict[str, Any] | None = None
) -> TrainConfig:
    """Defaults <- file <- ``overrides`` (``key.path=value``) <- ``flags`` (dotted keys, None = unset)."""
    data = TrainConfig().to_dict()
    if path is not None:
        data = deep_merge(data, read_config_file(path))
    for text in overrides or []:
        apply_override(data, *parse_override(text))
    for key, value in (flags or {}).items():
        if value is not None:
            apply_override(data, key.split("."), value)
    return TrainConfig.from_dict(data)
