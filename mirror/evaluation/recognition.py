"""Action understanding metric (paper Sec. 4.2): for each held-out video, the instruction with the highest
similarity among *all* instructions of the model's vocabulary; top-1 (and top-k) accuracy per task, per
instruction and overall, with the chance level of a uniform guess, and the confusion matrix of top-1 guesses
(which instructions the model mixes up, e.g. the drawers or the taps, is what per-task numbers hide)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class RecognitionRecord:
    """One held-out video: its true instruction and the model's ranked guesses."""

    task: str
    episode: int
    variation: int
    instruction: str
    ranked: list[tuple[str, float]]  # best first, cosine similarity
    in_vocabulary: bool

    @property
    def predicted(self) -> str:
        return self.ranked[0][0]

    def correct_at(self, k: int) -> bool:
        return self.instruction in [name for name, _ in self.ranked[:k]]

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "episode": self.episode,
            "variation": self.variation,
            "instruction": self.instruction,
            "predicted": self.predicted,
            "correct": self.correct_at(1),
            "in_vocabulary": self.in_vocabulary,
            "ranked": [[name, float(score)] for name, score in self.ranked],
        }


def chance_level(vocabulary_size: int, k: int = 1) -> float:
    """Accuracy of a uniform random ranking: ``min(k, V) / V``."""
    if vocabulary_size < 1:
        raise ValueError("the vocabulary is empty")
    return min(k, vocabulary_size) / vocabulary_size


def _accuracies(records: Sequence[RecognitionRecord], top_k: int) -> dict:
    return {
        "top1": float(np.mean([r.correct_at(1) for r in records])),
        f"top{top_k}": float(np.mean([r.correct_at(top_k) for r in records])),
        "episodes": len(records),
    }


@dataclass(frozen=True, eq=False)  # eq/hash over a numpy array would be ambiguous
class ConfusionMatrix:
    """Top-1 recognition counts: ``counts[i, j]`` videos whose true instruction is ``labels[i]`` were
    recognised as ``labels[j]`` (rows = truth, columns = prediction; the diagonal is correct)."""

    labels: tuple[str, ...]
    counts: np.ndarray  # (len(labels), len(labels)) int64

    def __post_init__(self) -> None:
        n = len(self.labels)
        if len(set(self.labels)) != n:
            raise ValueError(f"confusion labels repeat: {list(self.labels)}")
        if self.counts.shape != (n, n):
            raise ValueError(f"confusion counts must be {n}x{n} for {n} labels, got {self.counts.shape}")
        if self.counts.size and (self.counts.min() < 0 or not np.issubdtype(self.counts.dtype, np.integer)):
            raise ValueError("confusion counts must be non-negative integers")

    def to_dict(self) -> dict:
        return {"labels": list(self.labels), "counts": self.counts.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping) -> ConfusionMatrix:
        """Back from :meth:`to_dict` (e.g. read from results.json); ValueError when malformed."""
        try:
            labels, counts = tuple(str(s) for s in data["labels"]), np.asarray(data["counts"], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a confusion matrix with 'labels' and 'counts': {exc!r}") from exc
        return cls(labels, counts)


def confusion_matrix(
    records: Sequence[RecognitionRecord], labels: Sequence[str] | None = None
) -> ConfusionMatrix:
    """The top-1 confusion matrix of ``records``. ``labels`` fixes the rows' and columns' order and may add
    instructions never seen; by default every true or predicted instruction, sorted (which groups a task's
    instructions: "open the bottom/middle/top drawer")."""
    if not records:
        raise ValueError("no recognition records for a confusion matrix")
    seen = {r.instruction for r in records} | {r.predicted for r in records}
    labels = tuple(sorted(seen) if labels is None else labels)
    missing = sorted(seen - set(labels))
    if missing:
        raise ValueError(f"labels lack instructions the records hold: {missing}")
    index = {label: i for i, label in enumerate(labels)}
    counts = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for r in records:
        counts[index[r.instruction], index[r.predicted]] += 1
    return ConfusionMatrix(labels, counts)


def summarize_recognition(records: Sequence[RecognitionRecord], vocabulary_size: int, top_k: int = 5) -> dict:
    """Overall accuracy over all videos (micro), the mean of per-task accuracies (macro), per task, per true
    instruction, chance, and the top-1 confusion matrix (:meth:`ConfusionMatrix.to_dict`). Accuracies are
    fractions in [0, 1]."""
    if not records:
        raise ValueError("no recognition records to summarize")
    tasks = sorted({r.task for r in records})
    per_task = {t: _accuracies([r for r in records if r.task == t], top_k) for t in tasks}
    instructions = sorted({r.instruction for r in records})
    per_instruction = {
        s: _accuracies([r for r in records if r.instruction == s], top_k) for s in instructions
    }
    overall = _accuracies(records, top_k)
    overall["top1_task_mean"] = float(np.mean([per_task[t]["top1"] for t in tasks]))
    return {
        "top_k": top_k,
        "vocabulary_size": vocabulary_size,
        "chance_top1": chance_level(vocabulary_size, 1),
        f"chance_top{top_k}": chance_level(vocabulary_size, top_k),
        "out_of_vocabulary": sum(not r.in_vocabulary for r in records),
        "overall": overall,
        "per_task": per_task,
        "per_instruction": per_instruction,
        "confusion": confusion_matrix(records).to_dict(),
    }
