"""When the policy node acts, and the observation it acts on (ROS-free, so it is tested without a graph).

The policy acts once per keyframe step: when the bridge's episode is ``running``, the arm is idle and it has
not yet acted on this (episode, step), it takes the first complete camera set stamped *after* the latest
status change (so the scene it sees is the one the last action left). A new episode resets everything.

Over ROS the policy sees camera sets and ``joint_states``, not the simulator's full Observation: the arm and
finger joints come from ``joint_states``; ``gripper_open`` is the gripper state the policy itself last
commanded in this episode (RLBench episodes start open); only after a restart mid-episode, when that is
unknown, it is read from the finger opening. The tip pose is not streamed and the ARP input does not use it:
it is NaN so that nothing can silently rely on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mirror_policy.arp.preprocessing import FINGER_MAX
from sim_bridge.actions import KeyframeAction
from sim_bridge.observation import Observation
from sim_bridge.ros.errors import MessageError
from sim_bridge.ros.observation_sync import CameraSet
from sim_bridge.ros.status import RUNNING, EpisodeStatus

ARM_JOINTS = 7
OPEN_FINGER_FRACTION = 0.9  # finger opening (of the maximum) above which an unknown gripper counts as open


@dataclass
class InputLimits:
    max_invalid_depth_fraction: float = 0.5  # a camera with more NaN depth than this is a broken frame

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_invalid_depth_fraction <= 1.0:
            raise ValueError(
                f"max_invalid_depth_fraction must be in [0, 1], got {self.max_invalid_depth_fraction}"
            )


def observation_from_camera_set(
    camera_set: CameraSet, gripper_open: float | None, limits: InputLimits | None = None
) -> Observation:
    """An :class:`Observation` for ``MirrorAgent.act``; :class:`MessageError` for a set it must not use."""
    limits = limits or InputLimits()
    joints = camera_set.joint_positions
    if joints is None or np.asarray(joints).shape != (ARM_JOINTS + 2,):
        shape = None if joints is None else np.asarray(joints).shape
        raise MessageError(f"camera set needs 7 arm + 2 finger joint positions, got {shape}")
    joints = np.asarray(joints, dtype=np.float64)
    for name, frame in camera_set.frames.items():
        depth = np.asarray(frame.depth)
        invalid = float(np.mean(~np.isfinite(depth))) if depth.size else 1.0
        if invalid > limits.max_invalid_depth_fraction:
            raise MessageError(
                f"camera {name!r}: {invalid:.0%} of the depth pixels are invalid (NaN, inf or <= 0); "
                f"the limit is {limits.max_invalid_depth_fraction:.0%}"
            )
    fingers = joints[ARM_JOINTS:]
    if gripper_open is None:
        gripper_open = 1.0 if float(np.sum(fingers)) >= OPEN_FINGER_FRACTION * 2 * FINGER_MAX else 0.0
    zeros7 = np.zeros(ARM_JOINTS)
    return Observation(
        cameras=dict(camera_set.frames),
        joint_positions=joints[:ARM_JOINTS].copy(),
        joint_velocities=zeros7.copy(),
        joint_forces=zeros7.copy(),
        gripper_open=float(gripper_open),
        gripper_pose=np.full(7, np.nan),
        gripper_joint_positions=fingers.copy(),
        gripper_touch_forces=np.zeros(6),
        task_low_dim_state=np.zeros(0),
    )


class ActingState:
    """The policy's per-episode bookkeeping (see the module docstring)."""

    def __init__(self) -> None:
        self.status: EpisodeStatus | None = None
        self.status_stamp_ns = 0
        self.acted: tuple[int, int] | None = None  # (episode, step) of the last action published
        self.gripper_open: float | None = None  # commanded gripper state in this episode, None = unknown

    def update_status(self, status: EpisodeStatus) -> bool:
        """Take a new episode status; returns True when it starts a new episode (state reset)."""
        new_episode = self.status is None or status.episode != self.status.episode
        if new_episode:
            self.acted = None
            self.gripper_open = 1.0 if status.step == 0 else None
        self.status = status
        self.status_stamp_ns = int(round(status.stamp * 1e9))
        return new_episode

    @property
    def wants_to_act(self) -> bool:
        s = self.status
        return s is not None and s.state == RUNNING and not s.busy and self.acted != (s.episode, s.step)

    def accepts(self, camera_set: CameraSet) -> bool:
        """Whether to act on this set: acting is due and the set shows the scene after the last change."""
        return self.wants_to_act and camera_set.stamp_ns > self.status_stamp_ns

    def mark_acted(self, action: KeyframeAction) -> tuple[int, int]:
        assert self.status is not None
        self.acted = (self.status.episode, self.status.step)
        self.gripper_open = 1.0 if action.gripper_open else 0.0
        return self.acted
