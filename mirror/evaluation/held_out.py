"""The held-out episodes that recognition and alignment are measured on.

From a training run: the ``held_out`` rows of its ``split.json`` (the episodes ``train_joint`` never trained
on). From ``--data``: every episode of that dataset, which is then assumed to be unseen (e.g. a test split
generated with another ``--seed``). Each episode's ground truth is the instruction the model was trained with
(the split's ``instruction``; for ``--data`` the canonical first description, as in training by default).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mirror.evaluation.errors import EmptyHeldOutError
from mirror.training.data import RecordIdentity, record_instruction
from sim_bridge.dataset import EpisodeRecord, RLBenchDataset, describe_episode
from sim_bridge.errors import DatasetError

SPLIT_PARTS = ("held_out", "train")


@dataclass(frozen=True)
class HeldOutEpisode(RecordIdentity):
    """One evaluation episode on disk and the instruction it demonstrates."""

    record: EpisodeRecord
    instruction: str


def _resolve_episode_path(raw: str, split_file: Path) -> Path:
    """Split files store paths as given to ``train_joint`` (often relative to where it ran)."""
    path = Path(raw)
    if path.is_absolute() or path.is_dir():
        return path
    beside = split_file.parent / path
    return beside if beside.is_dir() else path


def held_out_from_split(
    split_file: Path | str, tasks: Sequence[str] = (), part: str = "held_out"
) -> list[HeldOutEpisode]:
    """The ``part`` episodes (default ``held_out``) of a run's ``split.json`` (optionally of ``tasks`` only).

    ``part="train"`` reads the episodes the run trained on instead: set beside the held-out figure, it says
    whether the model generalises or has memorised its training scenes."""
    if part not in SPLIT_PARTS:
        raise ValueError(f"part must be one of {SPLIT_PARTS}, got {part!r}")
    split_file = Path(split_file)
    try:
        data = json.loads(split_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read the split file {split_file}: {exc}") from exc
    rows = data.get(part) if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise DatasetError(f"{split_file} has no '{part}' list")
    episodes = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("path"), str):
            raise DatasetError(f"{split_file}: {part}[{i}] has no episode 'path'")
        if tasks and row.get("task") not in tasks:
            continue
        record = describe_episode(_resolve_episode_path(row["path"], split_file))
        instruction = row.get("instruction") or record_instruction(record)
        if not instruction:
            raise DatasetError(f"{record.path} has no instruction (no variation descriptions)")
        episodes.append(HeldOutEpisode(record, str(instruction)))
    if not episodes:
        raise EmptyHeldOutError(
            f"{split_file} lists no {part.replace('_', '-')} episodes"
            + (f" of tasks {list(tasks)}" if tasks else "")
            + " (trained with holdout_fraction 0?); pass --data <test dataset> or --skip-recognition "
            "--skip-alignment"
        )
    return episodes


def held_out_from_dataset(root: Path | str, tasks: Sequence[str] = ()) -> list[HeldOutEpisode]:
    """Every episode under an RLBench-layout ``root`` (optionally of ``tasks`` only), all taken as unseen."""
    dataset = RLBenchDataset(Path(root))  # DatasetError when missing or without any episode
    episodes = [
        HeldOutEpisode(r, record_instruction(r))
        for r in dataset.records
        if r.descriptions and (not tasks or r.task in tasks)
    ]
    if not episodes:
        raise EmptyHeldOutError(
            f"no episodes with instructions under {root}"
            + (f" for tasks {list(tasks)}" if tasks else "")
            + f"; it has tasks {dataset.tasks}"
        )
    return episodes
