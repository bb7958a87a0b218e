"""RLBench camera rig and the pinhole conventions shared by the simulator, the dataset and the policy.

RLBench (PyRep) conventions, kept exactly so that point clouds from our simulator and from real RLBench data
are interchangeable:

* intrinsics ``K`` have **negative** focal lengths, ``fx = fy = -(W/2) / tan(fov/2)``, centre (W/2, H/2);
* extrinsics ``E`` are the camera-to-world pose; the camera frame is x left, y up, z forward (the OpenCV
  frame with x and y flipped: ``E_cv = E @ diag(-1, -1, 1, 1)``);
* for array pixel (row v, column u) with metric z-depth ``z``:
  ``p_cam = ((u - cx) z / fx, (v - cy) z / fy, z)`` and ``p_world = E [p_cam, 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CAMERA_NAMES: tuple[str, ...] = ("front", "left_shoulder", "right_shoulder", "wrist")
IMAGE_SIZE = 128
WORLD_UP = np.array([0.0, 0.0, 1.0])
RLBENCH_FROM_CV = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class CameraSpec:
    """A camera of the rig. Fixed cameras give a world position and optical axis; the wrist camera is
    rigid on the gripper tip and gives its offset and axis in the tip frame instead."""

    name: str
    fov_deg: float
    near: float
    far: float
    position: tuple[float, float, float]
    axis: tuple[float, float, float]
    mounted_on_tip: bool = False

    def intrinsics(self, size: int = IMAGE_SIZE) -> np.ndarray:
        """RLBench intrinsics (negative focal length) for a square image of ``size`` pixels."""
        f = -(size / 2.0) / math.tan(math.radians(self.fov_deg) / 2.0)
        return np.array([[f, 0.0, size / 2.0], [0.0, f, size / 2.0], [0.0, 0.0, 1.0]])


def _wrist_axis() -> tuple[float, float, float]:
    # The wrist camera sits 5 cm behind the fingers' plane and is tilted 5 degrees towards them.
    tilt = math.radians(5.0)
    return (math.sin(tilt), 0.0, math.cos(tilt))


# Poses, FOVs and clip planes measured on RLBench's scene (research/rlbench.md section 3).
RLBENCH_CAMERAS: dict[str, CameraSpec] = {
    "front": CameraSpec("front", 40.0, 0.01, 4.5, (1.35, 0.0, 1.58), (-0.906, 0.0, -0.423)),
    "left_shoulder": CameraSpec(
        "left_shoulder", 40.0, 0.01, 3.2, (-0.175, 0.20, 1.98), (0.416, -0.073, -0.906)
    ),
    "right_shoulder": CameraSpec(
        "right_shoulder", 40.0, 0.01, 3.2, (-0.175, -0.20, 1.98), (0.416, 0.073, -0.906)
    ),
    "wrist": CameraSpec("wrist", 60.0, 0.01, 3.5, (-0.05, 0.002, -0.092), _wrist_axis(), mounted_on_tip=True),
}


def look_at_extrinsics(position: np.ndarray, axis: np.ndarray, up: np.ndarray = WORLD_UP) -> np.ndarray:
    """Camera-to-world pose in RLBench's convention for a camera at ``position`` looking along ``axis``,
    with image "up" as close to ``up`` as the axis allows."""
    z = np.asarray(axis, dtype=np.float64)
    z = z / np.linalg.norm(z)
    right = np.cross(z, up)  # OpenCV x (image right)
    if np.linalg.norm(right) < 1e-8:
        right = np.cross(z, np.array([1.0, 0.0, 0.0]))
    right /= np.linalg.norm(right)
    down = np.cross(z, right)  # OpenCV y (image down)
    e_cv = np.eye(4)
    e_cv[:3, 0], e_cv[:3, 1], e_cv[:3, 2], e_cv[:3, 3] = right, down, z, position
    return e_cv @ RLBENCH_FROM_CV


def tip_camera_extrinsics(spec: CameraSpec, tip_pose: np.ndarray) -> np.ndarray:
    """World pose of a tip-mounted camera given the 4x4 tip pose. Image "up" points along the tip's -x."""
    local = look_at_extrinsics(
        np.asarray(spec.position), np.asarray(spec.axis), up=np.array([-1.0, 0.0, 0.0])
    )
    return tip_pose @ local


def depth_to_camera_points(depth: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """(H, W) metric z-depth -> (H, W, 3) points in the RLBench camera frame."""
    h, w = depth.shape
    v, u = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    z = depth.astype(np.float64)
    return np.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], axis=-1)


def depth_to_world_points(depth: np.ndarray, intrinsics: np.ndarray, extrinsics: np.ndarray) -> np.ndarray:
    """(H, W) metric z-depth -> (H, W, 3) world-frame point cloud (RLBench's ``pointcloud_from_depth``)."""
    p = depth_to_camera_points(depth, intrinsics)
    return p @ extrinsics[:3, :3].T + extrinsics[:3, 3]


def project_world_points(
    points: np.ndarray, intrinsics: np.ndarray, extrinsics: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) world points -> ((N, 2) pixel (u, v) coordinates, (N,) z-depth). Inverse of the unprojection."""
    world_to_cam = np.linalg.inv(extrinsics)
    pc = points @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
    z = pc[:, 2]
    u = intrinsics[0, 0] * pc[:, 0] / z + intrinsics[0, 2]
    v = intrinsics[1, 1] * pc[:, 1] / z + intrinsics[1, 2]
    return np.stack([u, v], axis=-1), z


# ------------------------------------------------------------------------------ calibration in ``misc``
CALIBRATION_ITEMS: tuple[str, ...] = ("extrinsics", "intrinsics", "near", "far")


def calibration_key(camera: str, item: str) -> str:
    """RLBench's ``misc`` key of one calibration item of a camera, e.g. ``front_camera_intrinsics``."""
    return f"{camera}_camera_{item}"


def calibration_keys(cameras: Sequence[str]) -> set[str]:
    """Every ``misc`` key that :func:`calibration_from_misc` reads for ``cameras``."""
    return {calibration_key(c, item) for c in cameras for item in CALIBRATION_ITEMS}


@dataclass(frozen=True)
class CameraCalibration:
    intrinsics: np.ndarray  # (3, 3) RLBench convention (negative focal lengths)
    extrinsics: np.ndarray  # (4, 4) camera-to-world
    near: float
    far: float


def calibration_from_misc(
    misc: Mapping[str, Any], camera: str, error: type[Exception], where: str = ""
) -> CameraCalibration:
    """One camera's calibration from an RLBench ``misc`` dict (a recorded pickle or a live observation),
    checked: 3x3 intrinsics, 4x4 extrinsics, finite numbers, ``0 <= near < far``. Raises ``error`` naming
    ``where`` and the key, so the dataset reader and the RLBench backend report in their own error type."""
    prefix = f"{where} " if where else ""
    values = {}
    for item in CALIBRATION_ITEMS:
        key = calibration_key(camera, item)
        if key not in misc:
            raise error(f"{prefix}misc has no {key!r}")
        try:
            values[item] = np.array(misc[key], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise error(f"{prefix}{key} is not numeric: {exc}") from exc
        if not np.all(np.isfinite(values[item])):
            raise error(f"{prefix}{key} holds NaN or infinity")
    intrinsics, extrinsics = values["intrinsics"], values["extrinsics"]
    if intrinsics.size != 9 or extrinsics.size != 16:
        raise error(
            f"{prefix}{camera}: intrinsics must be 3x3 and extrinsics 4x4, got {intrinsics.shape}, "
            f"{extrinsics.shape}"
        )
    if values["near"].size != 1 or values["far"].size != 1:
        raise error(f"{prefix}{camera}: near and far must be one number each")
    near, far = float(values["near"].reshape(-1)[0]), float(values["far"].reshape(-1)[0])
    if not 0.0 <= near < far:
        raise error(f"{prefix}{camera}: clip planes must satisfy 0 <= near < far, got {near}, {far}")
    return CameraCalibration(intrinsics.reshape(3, 3), extrinsics.reshape(4, 4), near, far)
