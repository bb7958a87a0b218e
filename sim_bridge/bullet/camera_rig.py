"""Renders RLBench's four cameras with PyBullet's CPU TinyRenderer, in RLBench's calibration conventions.

TinyRenderer samples pixel row v at NDC y = 1 - 2(v+1)/H, one row off the pinhole model RLBench uses;
shifting the projection by one row (``P[1] -= (2/H) P[3]``) makes depth + RLBench intrinsics/extrinsics
reproduce ray-cast geometry to ~0.01 mm (research/sim.md section 1).
"""

from __future__ import annotations

import math

import numpy as np
import pybullet as p

from sim_bridge.cameras import (
    CAMERA_NAMES,
    IMAGE_SIZE,
    RLBENCH_CAMERAS,
    RLBENCH_FROM_CV,
    CameraSpec,
    look_at_extrinsics,
    tip_camera_extrinsics,
)
from sim_bridge.observation import CameraFrame

# OpenCV camera (x right, y down, z forward) -> OpenGL camera (x right, y up, z backward).
_GL_FROM_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def projection_matrix(spec: CameraSpec, size: int) -> np.ndarray:
    """OpenGL perspective projection with TinyRenderer's one-row sampling offset compensated."""
    f = 1.0 / math.tan(math.radians(spec.fov_deg) / 2.0)
    n, far = spec.near, spec.far
    proj = np.array(
        [
            [f, 0.0, 0.0, 0.0],
            [0.0, f, 0.0, 0.0],
            [0.0, 0.0, (far + n) / (n - far), 2.0 * far * n / (n - far)],
            [0.0, 0.0, -1.0, 0.0],
        ]
    )
    proj[1] -= (2.0 / size) * proj[3]
    return proj


def view_matrix(extrinsics: np.ndarray) -> np.ndarray:
    """World -> OpenGL camera, from an RLBench camera-to-world pose."""
    e_cv = extrinsics @ RLBENCH_FROM_CV  # RLBENCH_FROM_CV is its own inverse
    return np.linalg.inv(e_cv @ _GL_FROM_CV)


def mask_handles(segmentation: np.ndarray) -> np.ndarray:
    """PyBullet's ``uid | (link + 1) << 24`` segmentation -> one non-zero 24-bit handle per (body, link);
    0 is the background (RLBench masks hold one handle per scene shape)."""
    seg = segmentation.astype(np.int64)
    background = seg < 0
    uid = seg & ((1 << 24) - 1)
    link = seg >> 24  # link index + 1; 0 for a base
    handles = (uid + 1) + 256 * link
    handles[background] = 0
    return handles.astype(np.int32)


def handle_of(body: int, link: int = -1) -> int:
    """The mask handle of a body's link (``link=-1`` for the base), as :func:`mask_handles` encodes it."""
    return (body + 1) + 256 * (link + 1)


class CameraRig:
    """The four RLBench cameras; fixed ones have constant calibration, the wrist camera follows the tip."""

    def __init__(self, client: int, names: tuple[str, ...] = CAMERA_NAMES, size: int = IMAGE_SIZE) -> None:
        self.client = client
        self.size = size
        self.specs = [RLBENCH_CAMERAS[n] for n in names]
        self._projection = {s.name: projection_matrix(s, size) for s in self.specs}
        self._fixed_extrinsics = {
            s.name: look_at_extrinsics(np.asarray(s.position), np.asarray(s.axis))
            for s in self.specs
            if not s.mounted_on_tip
        }

    def extrinsics(self, spec: CameraSpec, tip_pose: np.ndarray) -> np.ndarray:
        if spec.mounted_on_tip:
            return tip_camera_extrinsics(spec, tip_pose)
        return self._fixed_extrinsics[spec.name]

    def render(self, tip_pose: np.ndarray) -> dict[str, CameraFrame]:
        return {s.name: self.render_one(s, tip_pose) for s in self.specs}

    def render_one(self, spec: CameraSpec, tip_pose: np.ndarray) -> CameraFrame:
        extrinsics = self.extrinsics(spec, tip_pose)
        _, _, rgba, depth_buffer, seg = p.getCameraImage(
            self.size,
            self.size,
            viewMatrix=view_matrix(extrinsics).T.reshape(-1).tolist(),
            projectionMatrix=self._projection[spec.name].T.reshape(-1).tolist(),
            renderer=p.ER_TINY_RENDERER,
            flags=p.ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX,
            shadow=0,
            physicsClientId=self.client,
        )
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(self.size, self.size, 4)[:, :, :3].copy()
        buf = np.asarray(depth_buffer, dtype=np.float64).reshape(self.size, self.size)
        near, far = spec.near, spec.far
        depth = np.clip(far * near / (far - (far - near) * buf), near, far).astype(np.float32)
        mask = mask_handles(np.asarray(seg).reshape(self.size, self.size))
        return CameraFrame(rgb, depth, mask, spec.intrinsics(self.size), extrinsics, near, far)
