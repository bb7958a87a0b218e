"""Reading official ViCLIP checkpoints, and saving/loading our own.

Official files (`.pth` from InternVideo, `model.safetensors` from the `*-hf` repos) hold a flat state dict,
sometimes wrapped (`{"model": ...}`, `{"state_dict": ...}`, `{"module": ...}`) or prefixed (`module.` from
DDP, `_orig_mod.` from torch.compile, `model.` from wrappers). Some `.pth` files also pickle the training
config, whose classes (`utils.easydict.EasyDict`, `utils.config.Config`) are not importable; we still load
them with `torch.load(weights_only=True)` by allow-listing those names as inert `OrderedDict`s, so no
code from the file ever runs. Every load is strict: exact key set and shapes, or a
`StateDictMismatchError` that lists the differences and names the config they were checked against.

Our own format is a directory with `model.safetensors` and `config.json`, each written atomically.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mirror_common.serialization import atomic_write

from .configuration_viclip import ViCLIPConfig, get_config
from .errors import ConfigError, StateDictMismatchError, ViCLIPCheckpointError
from .modeling_viclip import ViCLIP

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_WRAPPER_KEYS = ("model", "state_dict", "module")
_STRIPPABLE_PREFIXES = ("module.", "_orig_mod.", "model.")
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+) ")
_MAX_STUBBED_GLOBALS = 32


# ---------------------------------------------------------------------------------------------- reading
def _torch_load_weights_only(path: Path) -> Any:
    """`torch.load(weights_only=True)`, retrying with unknown pickled classes mapped to OrderedDict.

    The weights-only unpickler never imports or calls anything outside torch's allow-list; the names
    we add map to `OrderedDict`, so an unknown config object becomes a plain mapping of its fields.
    """
    stubbed: list[tuple[type, str]] = []
    while True:
        try:
            with torch.serialization.safe_globals(stubbed):
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError, wrapped in a RuntimeError on some paths
            match = _UNSUPPORTED_GLOBAL.search(str(exc))
            if match is None or len(stubbed) >= _MAX_STUBBED_GLOBALS:
                raise ViCLIPCheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
            name = match.group(1)
            if name.startswith(("torch.", "builtins.", "__builtin__.")) or any(n == name for _, n in stubbed):
                raise ViCLIPCheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
            logger.warning("checkpoint %s pickles %s; reading it as a plain mapping", path, name)
            stubbed.append((OrderedDict, name))


def read_checkpoint_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file or a torch pickle (`.pth`/`.pt`/`.bin`), unwrapped and unprefixed."""
    path = Path(path)
    if not path.is_file():
        raise ViCLIPCheckpointError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            raw: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise ViCLIPCheckpointError(f"cannot read safetensors checkpoint {path}: {exc}") from exc
    else:
        raw = _torch_load_weights_only(path)
    return unwrap_state_dict(raw, source=str(path))


def unwrap_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Descend through `model` / `state_dict` / `module` wrappers and strip whole-dict key prefixes."""
    for _ in range(4):
        if not isinstance(obj, Mapping):
            break
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        wrapper = next((k for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if wrapper is None:
            break
        obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not obj:
        raise ViCLIPCheckpointError(f"{source} holds no state dict (found {type(obj).__name__})")
    not_tensors = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise ViCLIPCheckpointError(f"{source}: state dict entries that are not tensors: {not_tensors[:8]}")
    state = {str(k): v for k, v in obj.items()}
    for prefix in _STRIPPABLE_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


# --------------------------------------------------------------------------------------------- checking
def expected_shapes(config: ViCLIPConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the state dict a model of this config has, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = ViCLIP(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_state_dict(state: Mapping[str, torch.Tensor], config: ViCLIPConfig) -> None:
    """Raise `StateDictMismatchError` unless `state` has exactly the keys and shapes of `config`'s model."""
    want = expected_shapes(config)
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    mismatched = [
        (k, tuple(v.shape), want[k]) for k, v in state.items() if k in want and tuple(v.shape) != want[k]
    ]
    if missing or unexpected or mismatched:
        raise StateDictMismatchError(config.name, missing, unexpected, mismatched)


def infer_official_config(state: Mapping[str, torch.Tensor]) -> ViCLIPConfig:
    """The official preset (`ViCLIP-B/16` or `ViCLIP-L/14`) whose patch size and widths `state` has."""
    conv = state.get("vision_encoder.conv1.weight")
    proj = state.get("vision_encoder.proj")
    if conv is None or proj is None or conv.ndim != 5 or proj.ndim != 2:
        raise ViCLIPCheckpointError(
            "cannot identify the ViCLIP size: vision_encoder.conv1.weight (5-D) / vision_encoder.proj (2-D) "
            "missing or malformed; pass a config explicitly"
        )
    for name in ("ViCLIP-B/16", "ViCLIP-L/14"):
        cfg = get_config(name)
        found = (conv.shape[0], conv.shape[-1], proj.shape[1])
        if found == (cfg.vision_width, cfg.patch_size, cfg.embed_dim):
            return cfg
    raise ViCLIPCheckpointError(
        f"no official ViCLIP preset has vision width {conv.shape[0]}, patch {conv.shape[-1]}, "
        f"embed dim {proj.shape[1]}; pass a config explicitly"
    )


def resize_position_tables(state: dict[str, torch.Tensor], config: ViCLIPConfig) -> dict[str, torch.Tensor]:
    """Adapt position tables to `config` when its input size, frame count or context differ.

    Spatial grid: bicubic 2-D interpolation, CLS row kept. Temporal, as upstream: truncated for fewer frames,
    linearly interpolated for more. Text positions: truncated (CLIP 77 -> 32). Other entries are returned
    untouched.
    """
    state = dict(state)
    key = "vision_encoder.positional_embedding"
    if key in state and state[key].shape[0] != config.patches_per_frame + 1:
        table = state[key]
        old = round((table.shape[0] - 1) ** 0.5)
        if old * old != table.shape[0] - 1:
            raise ViCLIPCheckpointError(f"{key} with {table.shape[0] - 1} patch rows is not a square grid")
        grid = table[1:].float().reshape(1, old, old, -1).permute(0, 3, 1, 2)
        size = config.grid_size
        grid = F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(size * size, -1).to(table.dtype)
        state[key] = torch.cat([table[:1], grid], dim=0)
    key = "vision_encoder.temporal_positional_embedding"
    if key in state and state[key].shape[1] > config.num_frames:
        state[key] = state[key][:, : config.num_frames]  # fewer frames: the first rows, as upstream
    elif key in state and state[key].shape[1] < config.num_frames:
        table = state[key]
        resized = F.interpolate(
            table.float().transpose(1, 2), size=config.num_frames, mode="linear", align_corners=True
        )
        state[key] = resized.transpose(1, 2).to(table.dtype)
    key = "text_encoder.positional_embedding"
    if key in state and state[key].shape[0] > config.context_length:
        state[key] = state[key][: config.context_length]
    return state


def load_state_dict_strict(model: ViCLIP, state: Mapping[str, torch.Tensor]) -> None:
    """Check keys and shapes against the model's config, then copy the tensors into an existing model
    (e.g. to resume training in place, keeping an optimizer's references to the parameters)."""
    check_state_dict(state, model.config)
    model.load_state_dict(dict(state), strict=True)


def model_from_official_state_dict(
    state: Mapping[str, Any],
    config: ViCLIPConfig | str | None = None,
    resize_positions: bool = False,
) -> ViCLIP:
    """A float32 ViCLIP model holding `state` (a state dict, wrapped or prefixed as in the files), eval mode.

    `config` defaults to the official preset matching the shapes. With `resize_positions`, the position
    tables are interpolated to the config's input size / frame count first (e.g. to run B/16 on 128x128
    RLBench frames); otherwise any shape difference is an error.
    """
    state = unwrap_state_dict(dict(state))
    if config is None:
        config = infer_official_config(state)
    elif isinstance(config, str):
        config = get_config(config)
    if resize_positions:
        state = resize_position_tables(state, config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return _model_holding(config, state)


def _model_holding(config: ViCLIPConfig, state: Mapping[str, torch.Tensor]) -> ViCLIP:
    """Strictly check `state`, then build the model on the meta device and take the tensors over, so no
    random init is computed and no second copy of the weights is held. Returned in eval mode."""
    check_state_dict(state, config)
    with torch.device("meta"):
        model = ViCLIP(config)
    model.load_state_dict(dict(state), strict=True, assign=True)
    return model.eval()


def load_official_checkpoint(
    path: str | Path,
    config: ViCLIPConfig | str | None = None,
    resize_positions: bool = False,
) -> ViCLIP:
    """A ViCLIP model with the weights of a released `.pth` / `.safetensors` file (see
    `model_from_official_state_dict` for `config` and `resize_positions`)."""
    return model_from_official_state_dict(read_checkpoint_file(path), config, resize_positions)


# ------------------------------------------------------------------------------------------ own format
def save_pretrained(model: ViCLIP, directory: str | Path) -> Path:
    """Write `model.safetensors` and `config.json` into `directory` (created if needed); returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", "config_name": model.config.name}
    atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(tensors, tmp, metadata=metadata))

    def write_config(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(model.config.to_json() + "\n")

    atomic_write(directory / CONFIG_NAME, write_config)
    return directory


def load_config(directory: str | Path) -> ViCLIPConfig:
    path = Path(directory) / CONFIG_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ViCLIPCheckpointError(f"cannot read {path}: {exc}") from exc
    try:
        return ViCLIPConfig.from_json(text)
    except (ConfigError, TypeError) as exc:
        raise ViCLIPCheckpointError(f"{path} is not a valid ViCLIP config: {exc}") from exc


def load_pretrained(directory: str | Path, map_location: str | torch.device = "cpu") -> ViCLIP:
    """Rebuild a model saved by `save_pretrained`, strictly checked against its config; eval mode."""
    directory = Path(directory)
    config = load_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise ViCLIPCheckpointError(f"weights file not found: {weights}")
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError) as exc:
        raise ViCLIPCheckpointError(f"cannot read {weights}: {exc}") from exc
    return _model_holding(config, state)
