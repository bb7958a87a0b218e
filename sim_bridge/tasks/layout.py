"""Random object placement on the table (RLBench's spawn boundaries, rebuilt as rejection sampling)."""

from __future__ import annotations

import numpy as np


def sample_positions(
    rng: np.random.Generator,
    count: int,
    low: tuple[float, float],
    high: tuple[float, float],
    min_distance: float,
    avoid: list[np.ndarray] | None = None,
    max_tries: int = 2000,
) -> list[np.ndarray]:
    """``count`` xy positions uniformly inside the box, pairwise (and from ``avoid``) at least
    ``min_distance`` apart. Raises ValueError if the box is too crowded."""
    placed: list[np.ndarray] = []
    others = list(avoid or [])
    for _ in range(max_tries):
        if len(placed) == count:
            return placed
        xy = rng.uniform(low, high)
        if all(np.linalg.norm(xy - q) >= min_distance for q in placed + others):
            placed.append(xy)
    if len(placed) == count:
        return placed
    raise ValueError(f"could not place {count} objects {min_distance} m apart in {low}..{high}")
