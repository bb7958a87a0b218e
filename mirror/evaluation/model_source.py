"""Finding the model and its held-out split from what a user passes: a run directory or a checkpoint.

``train_joint`` writes ``<run>/split.json``, ``<run>/final/`` and ``<run>/checkpoints/step_N/``; a bare
``MirrorModel.save_pretrained`` directory works too (then there is no split and ``--data`` is needed for the
held-out metrics).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mirror.evaluation.errors import CheckpointNotFoundError
from mirror.model import CONFIG_NAME, WEIGHTS_NAME
from mirror.training.run_directory import CHECKPOINTS_DIR, FINAL_DIR, LATEST_NAME, SPLIT_NAME


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """The model directory to load and, when the model came from a training run, its split file."""

    model_dir: Path
    split_file: Path | None


def _is_model_dir(path: Path) -> bool:
    return (path / CONFIG_NAME).is_file() or (path / WEIGHTS_NAME).is_file()


def _latest_step(run: Path) -> Path | None:
    root = run / CHECKPOINTS_DIR
    if not root.is_dir():
        return None
    latest = root / LATEST_NAME
    if latest.is_file():
        named = root / latest.read_text(encoding="utf-8").strip()
        if _is_model_dir(named):
            return named
    steps = sorted(p for p in root.glob("step_*") if _is_model_dir(p))
    return steps[-1] if steps else None


def resolve_checkpoint(path: Path | str) -> ResolvedCheckpoint:
    """A checkpoint directory as is; a run directory -> its ``final/`` model, else its newest checkpoint.

    Only existence is checked here; loading validates the files (``CheckpointError`` when corrupt).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(f"checkpoint directory {path} does not exist")
    if not path.is_dir():
        raise CheckpointNotFoundError(f"{path} is a file; pass a checkpoint or run directory")
    if _is_model_dir(path):
        model_dir = path
    elif _is_model_dir(path / FINAL_DIR):
        model_dir = path / FINAL_DIR
    elif (step := _latest_step(path)) is not None:
        model_dir = step
    else:
        raise CheckpointNotFoundError(
            f"{path} holds no model: expected {CONFIG_NAME} + {WEIGHTS_NAME}, a {FINAL_DIR}/ model or "
            f"{CHECKPOINTS_DIR}/step_* checkpoints"
        )
    return ResolvedCheckpoint(model_dir, _find_split(model_dir))


def run_directory(model_dir: Path) -> Path | None:
    """The ``train_joint`` run a model directory belongs to: the folder above ``final/`` or above
    ``checkpoints/step_N/``; None for a bare model directory (never an arbitrary parent folder, which could
    belong to another run)."""
    if model_dir.name == FINAL_DIR:
        return model_dir.parent
    if model_dir.parent.name == CHECKPOINTS_DIR:
        return model_dir.parent.parent
    return None


def _find_split(model_dir: Path) -> Path | None:
    """``split.json`` beside the model, or in its run directory."""
    run = run_directory(model_dir)
    for folder in [model_dir] + ([run] if run is not None else []):
        if (folder / SPLIT_NAME).is_file():
            return folder / SPLIT_NAME
    return None
