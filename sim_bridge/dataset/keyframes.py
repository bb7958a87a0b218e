"""PerAct's keyframe discovery (research/rlbench.md section 5), reproduced rule for rule so that keyframes,
and therefore training samples, match those of PerAct/RVT/ARP on the same demos.

A frame ``i`` is a keyframe if ``i != 0`` and the gripper state changed from ``i - 1``, or ``i`` is the last
frame, or the arm "stopped" at ``i``. Stopping needs all joint speeds ``<= stopping_delta``, a gripper state
that is steady around ``i`` and a refractory buffer that has run out (it is reset to 4 on every stop).
Finally, if the last two keyframes are adjacent, the second-to-last is dropped.

Quirk kept on purpose: the steadiness test reads ``gripper_open[i - 1]`` and ``gripper_open[i - 2]``, which
PerAct evaluates with Python's negative indexing, so at ``i = 0`` and ``i = 1`` they wrap around to the
*end* of the episode. An episode that ends with a different gripper state than it starts with therefore
cannot "stop" at frame 0 (nor at frame 1), which changes the buffer and can add an early keyframe. We write
the wrap-around explicitly (``% n``) instead of relying on negative indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sim_bridge.errors import DatasetError

STOPPING_DELTA = 0.1
STOPPED_BUFFER = 4


def discover_keyframes(observations: Sequence[Any], stopping_delta: float = STOPPING_DELTA) -> list[int]:
    """Keyframe indices of a demo given as observations with ``joint_velocities`` and ``gripper_open``
    (our :class:`~sim_bridge.observation.Observation` or a pickled RLBench one)."""
    if not observations:
        return []
    velocities = np.stack(
        [np.asarray(o.joint_velocities, dtype=np.float64).reshape(-1) for o in observations]
    )
    gripper = np.array([float(o.gripper_open) for o in observations])
    return discover_keyframes_from_arrays(velocities, gripper, stopping_delta)


def discover_keyframes_from_arrays(
    joint_velocities: np.ndarray, gripper_open: np.ndarray, stopping_delta: float = STOPPING_DELTA
) -> list[int]:
    """Keyframe indices from (T, J) joint velocities and (T,) gripper open states."""
    velocities = np.asarray(joint_velocities, dtype=np.float64)
    gripper = np.asarray(gripper_open, dtype=np.float64).reshape(-1)
    if velocities.ndim != 2 or velocities.shape[0] != gripper.shape[0]:
        raise DatasetError(
            f"need (T, J) joint velocities and (T,) gripper states, got {velocities.shape} and "
            f"{gripper.shape}"
        )
    n = gripper.shape[0]
    # np.allclose(v, 0, atol=delta) in PerAct: every |v| <= delta (NaN never counts as small).
    small_speed = np.all(np.abs(velocities) <= stopping_delta, axis=1)

    keyframes: list[int] = []
    buffer = 0
    for i in range(n):
        stopped = buffer <= 0 and small_speed[i] and _gripper_steady(gripper, i)
        buffer = STOPPED_BUFFER if stopped else buffer - 1
        gripper_changed = i > 0 and gripper[i] != gripper[i - 1]
        if i != 0 and (gripper_changed or i == n - 1 or stopped):
            keyframes.append(i)
    if len(keyframes) > 1 and keyframes[-1] - 1 == keyframes[-2]:
        keyframes.pop(-2)
    return keyframes


def _gripper_steady(gripper: np.ndarray, i: int) -> bool:
    """PerAct's gripper condition for a stop at ``i``: never at the second-to-last frame (nor the last),
    and the state equal at i-1, i, i+1 with i-2 equal to i-1 (indices before 0 wrap to the end, see
    module doc)."""
    n = gripper.shape[0]
    if i >= n - 2:
        return False
    prev, prev2 = gripper[(i - 1) % n], gripper[(i - 2) % n]
    return gripper[i] == gripper[i + 1] and gripper[i] == prev and prev2 == prev
