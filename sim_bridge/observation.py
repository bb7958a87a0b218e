"""One time step of an episode, with RLBench's ``Observation`` fields, shared by the simulator,
the dataset writer/reader and the models."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from sim_bridge.cameras import CAMERA_NAMES, depth_to_world_points


@dataclass
class CameraFrame:
    """One camera's images at one time step, with its calibration in RLBench's conventions."""

    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32, metric z-depth along the optical axis
    mask: np.ndarray  # (H, W) int32 object handles (0 = background)
    intrinsics: np.ndarray  # (3, 3), negative focal length
    extrinsics: np.ndarray  # (4, 4) camera -> world
    near: float
    far: float

    def point_cloud(self) -> np.ndarray:
        """(H, W, 3) world-frame points."""
        return depth_to_world_points(self.depth, self.intrinsics, self.extrinsics)


@dataclass
class Observation:
    """RLBench ``Observation`` fields; images live in ``cameras`` keyed by camera name."""

    cameras: dict[str, CameraFrame]
    joint_positions: np.ndarray  # (7,)
    joint_velocities: np.ndarray  # (7,)
    joint_forces: np.ndarray  # (7,)
    gripper_open: float  # 1.0 open, 0.0 closed
    gripper_pose: np.ndarray  # (7,) x, y, z, qx, qy, qz, qw of the tip in the world frame
    gripper_joint_positions: np.ndarray  # (2,) finger joints, metres
    gripper_touch_forces: np.ndarray  # (6,)
    task_low_dim_state: np.ndarray  # (k,)
    ignore_collisions: float = 1.0
    extra_misc: dict = field(default_factory=dict)

    @property
    def gripper_matrix(self) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] = Rotation.from_quat(self.gripper_pose[3:]).as_matrix()
        m[:3, 3] = self.gripper_pose[:3]
        return m

    def misc(self) -> dict:
        """RLBench's ``misc`` dict: per camera ``<cam>_camera_{extrinsics,intrinsics,near,far}``."""
        out = dict(self.extra_misc)
        for name, cam in self.cameras.items():
            out[f"{name}_camera_extrinsics"] = cam.extrinsics
            out[f"{name}_camera_intrinsics"] = cam.intrinsics
            out[f"{name}_camera_near"] = cam.near
            out[f"{name}_camera_far"] = cam.far
        return out

    def camera(self, name: str) -> CameraFrame:
        if name not in self.cameras:
            raise KeyError(f"observation has no camera {name!r}; it has {sorted(self.cameras)}")
        return self.cameras[name]


__all__ = ["CAMERA_NAMES", "CameraFrame", "Observation"]
