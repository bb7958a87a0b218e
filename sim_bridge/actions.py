"""RLBench's keyframe action: ``[x, y, z, qx, qy, qz, qw, gripper_open, ignore_collisions]``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim_bridge.errors import InvalidActionError

ACTION_SIZE = 9
# RLBench / PerAct: an episode gets at most 25 keyframe actions (rollouts, the bridge's episodes, and the
# length of ARP's time feature).
MAX_KEYFRAMES = 25
# Quaternions further than this from unit norm are refused rather than silently normalised:
# they point at a bug upstream, not at rounding.
QUATERNION_NORM_TOLERANCE = 0.05


@dataclass(frozen=True)
class KeyframeAction:
    """A target tip pose in the world frame plus the gripper command and the collision flag."""

    position: np.ndarray  # (3,)
    quaternion: np.ndarray  # (4,) x, y, z, w; unit norm
    gripper_open: bool
    ignore_collisions: bool = False

    @classmethod
    def from_vector(cls, vector: np.ndarray | list[float]) -> KeyframeAction:
        """Validate an RLBench action vector (8 or 9 floats; a missing 9th means "respect collisions")."""
        v = np.asarray(vector, dtype=np.float64).reshape(-1)
        if v.size not in (ACTION_SIZE - 1, ACTION_SIZE):
            raise InvalidActionError(f"action must have 8 or 9 values, got {v.size}")
        if not np.all(np.isfinite(v)):
            raise InvalidActionError(f"action contains NaN or infinity: {v.tolist()}")
        q = v[3:7]
        norm = float(np.linalg.norm(q))
        if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
            raise InvalidActionError(f"quaternion norm is {norm:.4f}, expected 1 (xyzw order)")
        ignore = bool(v[8] > 0.5) if v.size == ACTION_SIZE else False
        return cls(v[:3].copy(), q / norm, bool(v[7] > 0.5), ignore)

    def to_vector(self) -> np.ndarray:
        return np.concatenate(
            [self.position, self.quaternion, [float(self.gripper_open), float(self.ignore_collisions)]]
        )
