"""Which (task, variation) the mirror loop demonstrates, drawn with a seeded generator (ROS-free).

A checkpoint records the instructions it was trained on (``MirrorConfig.instructions``, canonical first
descriptions), not the tasks; the candidates are therefore every (task, variation) of the embedded task
registry whose canonical instruction is in that vocabulary. Several variations can share an instruction
(push_buttons names only the buttons to press), which is why the loop keeps the demo's variation as ground
truth. A task named explicitly but absent from the vocabulary is still run, over all its variations: the
policy then acts on instructions it never saw, which is a legitimate (if hopeless) experiment.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sim_bridge.errors import UnknownTaskError

log = logging.getLogger(__name__)

MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class TaskVariation:
    task: str
    variation: int
    instruction: str  # canonical description: what recognition should output
    in_vocabulary: bool = True


@dataclass(frozen=True)
class EpisodePlan:
    index: int  # 0-based loop episode
    target: TaskVariation
    demo_seed: int
    policy_seed: int  # a different layout of the same task and variation


def parse_tasks(text: str) -> list[str]:
    """``"push_buttons, open_drawer"`` -> ``["push_buttons", "open_drawer"]`` (empty: no restriction)."""
    return [name.strip() for name in text.split(",") if name.strip()]


def candidate_variations(vocabulary: Sequence[str], tasks: Sequence[str] = ()) -> list[TaskVariation]:
    """Candidates for the loop (see the module docstring); ``tasks`` empty = every task in the vocabulary.

    Raises :class:`UnknownTaskError` for a task name the registry lacks and ValueError when nothing is left.
    """
    from sim_bridge.tasks import TASKS, make_task

    known = set(vocabulary)
    names = list(dict.fromkeys(tasks)) or sorted(TASKS)
    candidates: list[TaskVariation] = []
    for name in names:
        task = make_task(name)  # UnknownTaskError lists the available tasks
        pairs = [(v, task.descriptions(v)[0]) for v in range(task.variation_count())]
        matched = [TaskVariation(name, v, text) for v, text in pairs if text in known]
        if not matched and tasks:
            log.warning("task %s is not in the checkpoint's vocabulary: using all its variations", name)
            matched = [TaskVariation(name, v, text, in_vocabulary=False) for v, text in pairs]
        candidates += matched
    if not candidates:
        raise ValueError(
            "no task of the simulator has an instruction in the checkpoint's vocabulary "
            f"({len(known)} instructions); name the tasks explicitly (parameter tasks)"
        )
    return candidates


class EpisodePicker:
    """Seeded draws of (task, variation, demo seed, policy seed): tasks uniformly, then one of the task's
    variations uniformly; the same seed gives the same episodes."""

    def __init__(self, candidates: Sequence[TaskVariation], seed: int) -> None:
        if not candidates:
            raise ValueError("no candidate task variations")
        self.candidates = list(candidates)
        self.tasks = list(dict.fromkeys(c.task for c in self.candidates))
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def next(self) -> EpisodePlan:
        # Task first, then one of its variations: push_buttons' 50 variations must not crowd out the others.
        task = self.tasks[int(self.rng.integers(len(self.tasks)))]
        variations = [c for c in self.candidates if c.task == task]
        target = variations[int(self.rng.integers(len(variations)))]
        demo_seed = int(self.rng.integers(MAX_SEED))
        policy_seed = int(self.rng.integers(MAX_SEED - 1))
        if policy_seed >= demo_seed:
            policy_seed += 1  # never the demo's own layout
        plan = EpisodePlan(self.count, target, demo_seed, policy_seed)
        self.count += 1
        return plan


__all__ = [
    "EpisodePicker",
    "EpisodePlan",
    "TaskVariation",
    "UnknownTaskError",
    "candidate_variations",
    "parse_tasks",
]
