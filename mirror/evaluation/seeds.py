"""Which scenes the rollouts run in: simulator seeds disjoint from demo generation, and a variation schedule.

Seed rule. ``generate_demos`` seeds episode ``k`` of a task with ``(seed * 1_000_003 + crc32(task)) % 2**31
+ 7919 * k`` (plus ``104_729`` per retry), which stays below ``2**31 + 2**30`` for any dataset of fewer than
~100k episodes per task. Rollout episode ``i`` of evaluation seed ``s`` uses

    env_seed = 3 * 2**30 + s * 2**16 + i        (0 <= s < 2**14, 0 <= i < 2**16)

so evaluation scenes lie in ``[3 * 2**30, 2**32)``: never a generation seed, the same for every model (a fair
comparison), and below ``2**32`` so that seeding numpy's legacy generator (the RLBench backend) also works.

Variation rule. Per (task, evaluation seed) the task's variations are shuffled with a generator seeded by
``(s, crc32(task))`` and cycled: N episodes cover every variation ``floor(N / count)`` or ``ceil(N / count)``
times, and different evaluation seeds see different variations when N is smaller than the count.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np

from mirror.evaluation.errors import SeedCollisionError

EVAL_SEED_BASE = 3 * 2**30
EPISODE_STRIDE = 2**16
MAX_EVAL_SEED = 2**14


def environment_seed(eval_seed: int, episode: int) -> int:
    """The simulator seed of rollout ``episode`` under evaluation seed ``eval_seed`` (see module doc)."""
    if not 0 <= int(eval_seed) < MAX_EVAL_SEED:
        raise ValueError(f"evaluation seeds must lie in [0, {MAX_EVAL_SEED}), got {eval_seed}")
    if not 0 <= int(episode) < EPISODE_STRIDE:
        raise ValueError(f"episode index must lie in [0, {EPISODE_STRIDE}), got {episode}")
    return EVAL_SEED_BASE + int(eval_seed) * EPISODE_STRIDE + int(episode)


def variation_schedule(task: str, variation_count: int, eval_seed: int, episodes: int) -> list[int]:
    """The variation of each of ``episodes`` rollouts: seeded shuffles of all variations, concatenated."""
    if variation_count < 1:
        raise ValueError(f"task {task!r} has no variations")
    if episodes < 0:
        raise ValueError(f"episodes must be >= 0, got {episodes}")
    rng = np.random.default_rng([int(eval_seed), zlib.crc32(task.encode())])
    rounds = -(-episodes // variation_count)
    order = np.concatenate([rng.permutation(variation_count) for _ in range(rounds)]) if rounds else []
    return [int(v) for v in order[:episodes]]


def check_disjoint(eval_seeds: Iterable[int], generation_seeds: Iterable[int]) -> None:
    """Refuse evaluation scenes that a demonstration was generated from."""
    clash = sorted(set(map(int, eval_seeds)) & set(map(int, generation_seeds)))
    if clash:
        raise SeedCollisionError(f"evaluation seeds {clash[:5]} were used to generate demonstrations")
