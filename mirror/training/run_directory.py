"""Run-directory checkpoints of ``train_joint``: model + trainer state, written atomically, resumed exactly.

Layout of a run directory::

    <out>/train_config.json         the resolved TrainConfig
    <out>/split.json                train / held-out episodes
    <out>/metrics.jsonl             one JSON line per logged step / evaluation (rank 0)
    <out>/tb/                       TensorBoard events
    <out>/checkpoints/step_00001000/  model.safetensors, config.json, extra.json, trainer_state.pt
    <out>/checkpoints/latest        name of the newest complete checkpoint
    <out>/final/                    the last model (model.safetensors + config.json), for MirrorAgent

A checkpoint directory is assembled under a temporary name and renamed into place, so a crash leaves
either the previous checkpoint set or the new one, never a half-written directory under a real name.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mirror.model import MirrorModel
from mirror_common.errors import CheckpointError
from mirror_common.serialization import atomic_write

log = logging.getLogger(__name__)

TRAINER_STATE_NAME = "trainer_state.pt"
CHECKPOINTS_DIR = "checkpoints"
LATEST_NAME = "latest"
FINAL_DIR = "final"
SPLIT_NAME = "split.json"  # <run>/split.json: the train / held-out episodes
TRAIN_LOG_NAME = "train.log"  # <run>/train.log: train_joint's log, timestamped (how long each step took)
STATE_VERSION = 1
# Settings that may differ when resuming: where and how often things are written, how data is loaded, what
# computes (device, threads, precision: weights, optimizer states and checkpoints are float32 under any).
RESUME_FREE_KEYS = frozenset(
    {
        "out",
        "progress",
        "log_every",
        "eval_every",
        "checkpoint_every",
        "keep_checkpoints",
        "device",
        "threads",
        "precision",
        "data.root",
        "data.cache",
        "data.num_workers",
        "init",
        "viclip_weights",
        "stop_after",
    }
)


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) generator states, in weights-only-loadable types."""
    np_state = np.random.get_state(legacy=False)
    state = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": np_state["state"]["key"].tolist(),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": n["bit_generator"],
            "state": {"key": np.asarray(n["key"], dtype=np.uint32), "pos": n["pos"]},
            "has_gauss": n["has_gauss"],
            "gauss": n["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key not in ("viclip", "arp"):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two TrainConfig dicts, ignoring :data:`RESUME_FREE_KEYS`."""
    a, b = flatten(saved), flatten(current)
    keys = sorted(set(a) | set(b))
    return [k for k in keys if k not in RESUME_FREE_KEYS and k != "steps" and a.get(k) != b.get(k)]


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: MirrorModel,
    trainer_state: dict[str, Any],
    extra: dict[str, Any],
    keep: int,
) -> Path:
    """Write ``checkpoints/step_<step>`` atomically, point ``latest`` at it, prune to ``keep`` newest."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(tmp, extra=extra)
        state = {"format_version": STATE_VERSION, **trainer_state}
        atomic_write(tmp / TRAINER_STATE_NAME, lambda path: torch.save(state, path))
        if final.exists():  # the same step saved again (e.g. the end of a run that just checkpointed)
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write(root / LATEST_NAME, lambda path: Path(path).write_text(final.name + "\n", encoding="utf-8"))
    steps = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_"))
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(path: Path) -> Path:
    """The checkpoint a ``--resume`` argument names: a checkpoint directory itself, or a run directory
    (its ``checkpoints/latest``, else the highest ``step_*``)."""
    path = Path(path)
    if (path / TRAINER_STATE_NAME).is_file():
        return path
    root = path / CHECKPOINTS_DIR
    if not root.is_dir():
        raise CheckpointError(f"{path} is neither a checkpoint nor a run directory with {CHECKPOINTS_DIR}/")
    latest = root / LATEST_NAME
    if latest.is_file():
        candidate = root / latest.read_text(encoding="utf-8").strip()
        if (candidate / TRAINER_STATE_NAME).is_file():
            return candidate
        log.warning(
            "%s names %s, which is incomplete; using the newest complete checkpoint", latest, candidate
        )
    complete = sorted(p for p in root.glob("step_*") if (p / TRAINER_STATE_NAME).is_file())
    if not complete:
        raise CheckpointError(f"no complete checkpoint under {root}")
    return complete[-1]


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory a checkpoint belongs to (``<run>/checkpoints/step_N`` -> ``<run>``)."""
    checkpoint = Path(checkpoint).resolve()
    if checkpoint.parent.name != CHECKPOINTS_DIR:
        raise CheckpointError(f"{checkpoint} is not inside a run's {CHECKPOINTS_DIR}/ directory")
    return checkpoint.parent.parent


def load_trainer_state(checkpoint: Path) -> dict[str, Any]:
    path = Path(checkpoint) / TRAINER_STATE_NAME
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise CheckpointError(f"cannot read trainer state {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format_version") != STATE_VERSION:
        raise CheckpointError(f"{path} is not a trainer state of version {STATE_VERSION}")
    for key in ("step", "optimizers", "rng", "train_config", "world_size"):
        if key not in state:
            raise CheckpointError(f"{path} lacks {key!r}")
    return state
