"""Action understanding metric (paper Sec. 4.2): for each held-out video, the instruction with the highest
similarity among *all* instructions of the model's vocabulary; top-1 (and top-k) accuracy per task and
overall, with the chance level of a uniform guess."""

from __future__ import annotations

from collections.abc import Sequence
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


def summarize_recognition(records: Sequence[RecognitionRecord], vocabulary_size: int, top_k: int = 5) -> dict:
    """Overall accuracy over all videos (micro), the mean of per-task accuracies (macro), per task, and
    chance. Accuracies are fractions in [0, 1]."""
    if not records:
        raise ValueError("no recognition records to summarize")
    tasks = sorted({r.task for r in records})
    per_task = {t: _accuracies([r for r in records if r.task == t], top_k) for t in tasks}
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
    }
