"""Embodied execution metric (paper Sec. 4.3): success rate per task over N unseen episodes, repeated over
several evaluation seeds and reported as mean +- standard deviation across seeds, with failure reasons and a
per-episode timing breakdown."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from mirror.evaluation.rollout import FAILURE_REASONS, EpisodeOutcome

TIMING_FIELDS = (
    "reset_seconds",
    "inference_seconds",
    "planning_seconds",
    "execution_seconds",
    "total_seconds",
)


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and *sample* standard deviation (ddof 1; 0 for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("no values")
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def _task_summary(
    outcomes: Sequence[EpisodeOutcome], eval_seeds: Sequence[int], one_task: bool = True
) -> dict:
    per_seed = {}
    for seed in eval_seeds:
        mine = [o for o in outcomes if o.eval_seed == seed]
        per_seed[str(seed)] = float(np.mean([o.success for o in mine])) if mine else float("nan")
    mean, std = mean_and_std([v for v in per_seed.values() if np.isfinite(v)])
    failures = Counter(o.failure for o in outcomes if o.failure)
    summary = {
        "success_mean": mean,
        "success_std": std,
        "success_per_seed": per_seed,
        "episodes": len(outcomes),
        "successes": int(sum(o.success for o in outcomes)),
        "mean_steps": float(np.mean([o.steps for o in outcomes])),
        "failures": {reason: int(failures.get(reason, 0)) for reason in FAILURE_REASONS},
        "timing_mean_seconds": {f: float(np.mean([getattr(o, f) for o in outcomes])) for f in TIMING_FIELDS},
    }
    if one_task:  # pooled over seeds: a variation has too few episodes per seed for a spread
        variations = sorted({o.variation for o in outcomes})
        summary["success_per_variation"] = {
            str(v): float(np.mean([o.success for o in outcomes if o.variation == v])) for v in variations
        }
        summary["episodes_per_variation"] = {
            str(v): sum(o.variation == v for o in outcomes) for v in variations
        }
    return summary


def summarize_execution(outcomes: Sequence[EpisodeOutcome], eval_seeds: Sequence[int]) -> dict:
    """Per task and overall. The overall mean is the mean of per-task rates (every task weighs the same, as
    in the paper's "average" column); its std is over seeds of the per-seed task-averaged rate."""
    if not outcomes:
        raise ValueError("no rollouts to summarize")
    tasks = sorted({o.task for o in outcomes})
    per_task = {t: _task_summary([o for o in outcomes if o.task == t], eval_seeds) for t in tasks}
    seed_means: dict[str, float] = {}
    for seed in eval_seeds:
        rates = [per_task[t]["success_per_seed"][str(seed)] for t in tasks]
        if all(np.isfinite(r) for r in rates):
            seed_means[str(seed)] = float(np.mean(rates))
    overall = _task_summary(outcomes, eval_seeds, one_task=False)
    overall["success_mean"] = float(np.mean([per_task[t]["success_mean"] for t in tasks]))
    overall["success_std"] = mean_and_std(list(seed_means.values()))[1] if seed_means else 0.0
    overall["success_per_seed"] = seed_means
    return {"eval_seeds": [int(s) for s in eval_seeds], "overall": overall, "per_task": per_task}


def summarize_by_instruction(
    outcomes: Sequence[EpisodeOutcome], vocabulary: Sequence[str], eval_seeds: Sequence[int]
) -> dict:
    """:func:`summarize_execution` of the rollouts whose instruction the model was trained on (``trained``)
    apart from those it never saw (``new``: the generalisation figure); an empty group is omitted."""
    known = set(vocabulary)
    groups = {
        "trained": [o for o in outcomes if o.instruction in known],
        "new": [o for o in outcomes if o.instruction not in known],
    }
    return {label: summarize_execution(group, eval_seeds) for label, group in groups.items() if group}
