"""``evaluate --point-clouds``: what the policy saw at each keyframe step and where it sent the gripper, as
PLY point clouds to open in any viewer (open3d, MeshLab, CloudCompare), for failures a video cannot explain
(a keyframe inside an object, a wrong depth, a crop that cut the target away).

Per keyframe step of each rollout, ``<out>/point_clouds/<model>/<task>_seed<s>_ep<i>_step<k>.ply`` holds the
fused point cloud of the policy's cameras exactly as the policy gets it
(:func:`~mirror_policy.arp.preprocessing.observation_to_sample`: every ``point_stride``-th pixel, cropped to
the scene bounds as the renderer does) in its colours, plus the predicted keyframe: a 1 cm sphere of points
(cyan: gripper open, orange: closed, as in the videos) and the target orientation's axes (x red, y green,
z blue, 5 cm). Writing needs open3d (``pip install -e '.[pointcloud]'``), imported only when asked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from mirror.evaluation.errors import EvaluationError
from mirror.evaluation.rollout import RolloutObserver, RolloutPlan
from mirror.evaluation.rollout_video import CLOSED_COLOR, OPEN_COLOR
from mirror_policy.arp.configuration import ARPConfig
from sim_bridge.actions import KeyframeAction
from sim_bridge.observation import Observation

MARKER_RADIUS = 0.01  # m
MARKER_POINTS = 300
AXIS_LENGTH = 0.05  # m
AXIS_POINTS = 25
AXIS_COLORS = np.eye(3)  # x red, y green, z blue
PLY_SUFFIX = ".ply"


class PointCloudExportError(EvaluationError):
    """Point clouds were asked for but cannot be written (open3d missing, a failed write)."""


def require_open3d() -> Any:
    """The open3d module, or a :class:`PointCloudExportError` that says how to install it."""
    try:
        import open3d
    except ImportError as err:
        raise PointCloudExportError(
            f"--point-clouds writes PLY files with open3d, which cannot be imported ({err}); install it with "
            "pip install -e '.[pointcloud]' (or pip install open3d)"
        ) from err
    return open3d


def fused_point_cloud(observation: Observation, config: ARPConfig) -> tuple[np.ndarray, np.ndarray]:
    """((N, 3) world points, (N, 3) colours in [0, 1]) of the policy's cameras, inside its scene bounds."""
    from mirror_policy.arp.preprocessing import observation_to_sample
    from mirror_policy.arp.renderer import in_bounds_mask

    sample = observation_to_sample(observation, config, step=0)  # the step only sets the time feature
    keep = in_bounds_mask(sample["points"][None], config.scene_bounds)[0]
    return sample["points"][keep].double().numpy(), sample["rgb"][keep].double().numpy()


def keyframe_points(action: KeyframeAction) -> tuple[np.ndarray, np.ndarray]:
    """A sphere of points at the keyframe (coloured by the gripper command) and its orientation's axes."""
    i = np.arange(MARKER_POINTS) + 0.5  # Fibonacci sphere: evenly spread points
    polar, azimuth = np.arccos(1 - 2 * i / MARKER_POINTS), np.pi * (1 + 5**0.5) * i
    sphere = np.stack(
        [np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), np.cos(polar)], axis=-1
    )
    colour = np.array(OPEN_COLOR if action.gripper_open else CLOSED_COLOR, dtype=np.float64) / 255.0
    rotation = Rotation.from_quat(action.quaternion).as_matrix()
    along = np.linspace(0.0, AXIS_LENGTH, AXIS_POINTS)[:, None]
    axes = [action.position + along * rotation[:, k] for k in range(3)]
    points = np.concatenate([action.position + MARKER_RADIUS * sphere, *axes])
    colours = np.concatenate(
        [np.tile(colour, (MARKER_POINTS, 1)), *(np.tile(c, (AXIS_POINTS, 1)) for c in AXIS_COLORS)]
    )
    return points, colours


def write_ply(path: str | os.PathLike, points: np.ndarray, colours: np.ndarray) -> Path:
    """A binary coloured PLY through open3d, written atomically."""
    o3d = require_open3d()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cloud = o3d.geometry.PointCloud()
    cloud.points = o3d.utility.Vector3dVector(np.asarray(points, dtype=np.float64))
    cloud.colors = o3d.utility.Vector3dVector(np.clip(np.asarray(colours, dtype=np.float64), 0.0, 1.0))
    partial = path.with_name(f"{path.stem}.part{PLY_SUFFIX}")  # open3d picks the format by the suffix
    if not o3d.io.write_point_cloud(str(partial), cloud, write_ascii=False):
        raise PointCloudExportError(f"open3d could not write {partial}")
    partial.replace(path)
    return path


def point_cloud_name(task: str, eval_seed: int, episode: int, step: int) -> str:
    return f"{task}_seed{eval_seed}_ep{episode}_step{step}{PLY_SUFFIX}"


class PointCloudRecorder(RolloutObserver):
    """Writes, for every keyframe step of one rollout, the fused point cloud the policy acted on with the
    keyframe it predicted (see the module docstring); :attr:`paths` lists the files."""

    def __init__(self, directory: str | os.PathLike, config: ARPConfig, plan: RolloutPlan) -> None:
        self.directory = Path(directory)
        self.config = config
        self.plan = plan
        self.paths: list[Path] = []

    def on_keyframe(
        self, step: int, observation: Observation, action: KeyframeAction, e: np.ndarray | None = None
    ) -> None:
        scene, scene_colours = fused_point_cloud(observation, self.config)
        marker, marker_colours = keyframe_points(action)
        name = point_cloud_name(self.plan.task, self.plan.eval_seed, self.plan.episode, step)
        self.paths.append(
            write_ply(
                self.directory / name,
                np.concatenate([scene, marker]),
                np.concatenate([scene_colours, marker_colours]),
            )
        )
