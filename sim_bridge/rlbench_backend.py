"""The real RLBench (CoppeliaSim 4.1 + PyRep) behind :class:`sim_bridge.backend.SimBackend`.

For users who have CoppeliaSim: the same tasks, cameras and keyframe actions as the embedded PyBullet
backend, but on RLBench's own scenes, so policies can be evaluated exactly as PerAct/RVT/ARP were.

**Not runnable in this project's environment**: CoppeliaSim cannot be installed here, so
:class:`RLBenchBackend` has never been run end to end by us. What is tested here is everything that does
not need the simulator: the observation conversion (:func:`convert_observation`, duck-typed on RLBench's
``Observation``), the action vector, the error translation, and the install checks. Every ``rlbench`` /
``pyrep`` import is inside a function, so importing this module never needs them; without them,
constructing the backend raises :class:`~sim_bridge.errors.BackendUnavailableError` saying what to install.

Choices, and why:

* Action mode ``MoveArmThenGripper(EndEffectorPoseViaPlanning(), Discrete())`` (PerAct/RVT/ARP's
  evaluation mode, ``research/rlbench.md`` section 4). The PerAct fork of RLBench reads a 9th action value,
  ``ignore_collisions``; upstream RLBench takes 8 values and fixes collision checking per arm mode, so there
  the flag is applied by switching that arm mode's collision checking before each step.
* Depth: cameras run with RLBench's default ``depth_in_meters=False``, the normalised linear z-depth that
  RLBench's dataset generator records, and :func:`convert_observation` turns it into metres with each
  camera's near/far from ``misc`` (``near + d (far - near)``, RLBench's own formula for its point clouds).
  So :attr:`CameraFrame.depth` is metric either way; ``depth_in_meters=True`` is also supported.
* Masks: one-channel object handles (``masks_as_one_channel=True``), rounded to int32.
* Seeding: RLBench places objects with numpy's global RNG, so ``reset`` seeds it before resetting the task
  (as RLBench's ``reset_to_demo`` restores it), and ``demo`` restores the same RNG state so that RLBench's
  live demo, which resets the task itself, replays the episode's layout.
"""

from __future__ import annotations

import inspect
import logging
import os
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from sim_bridge.actions import KeyframeAction
from sim_bridge.backend import EpisodeInfo, FrameCallback, StepResult
from sim_bridge.cameras import CAMERA_NAMES, IMAGE_SIZE, calibration_from_misc, calibration_keys
from sim_bridge.dataset import codec
from sim_bridge.errors import (
    BackendUnavailableError,
    IKError,
    InvalidActionError,
    PlanningError,
    SimError,
    UnknownTaskError,
    UnknownVariationError,
)
from sim_bridge.observation import CameraFrame, Observation
from sim_bridge.tasks import make_task
from sim_bridge.tasks.base import TASKS

logger = logging.getLogger(__name__)

# The paper's 18 RLBench tasks (PerAct's set) and their variation counts (supplement Table 4), read from the
# embedded simulator's definitions of the same tasks so that the counts are written down once.
RLBENCH_VARIATION_COUNTS: dict[str, int] = {name: make_task(name).variation_count() for name in sorted(TASKS)}

INSTALL_HINT = (
    "To use the RLBench backend: (1) install CoppeliaSim 4.1 "
    "(https://www.coppeliarobotics.com/files/V4_1_0/, the Edu build for your Ubuntu) and, in the shell that "
    "starts Python, export COPPELIASIM_ROOT=<its folder>, LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$COPPELIASIM_ROOT "
    "and QT_QPA_PLATFORM_PLUGIN_PATH=$COPPELIASIM_ROOT (without a display, run under xvfb-run); "
    "(2) pip install git+https://github.com/stepjam/PyRep.git and "
    "pip install git+https://github.com/MohitShridhar/RLBench.git@peract (the RLBench fork that "
    "PerAct/RVT/ARP use; it has all 18 tasks, while upstream git+https://github.com/stepjam/RLBench.git "
    "lacks three of them). "
    "Otherwise use the embedded PyBullet backend."
)

# RLBench/PyRep exception class names -> our typed errors. Matched by name so that this module needs neither
# package to translate them (and so that tests can use look-alike classes).
_ERROR_TYPES_BY_NAME: dict[str, type[SimError]] = {
    "IKError": IKError,  # pyrep.errors: IK via Jacobian failed
    "ConfigurationError": IKError,  # pyrep.errors: no joint configuration for the tip pose
    "ConfigurationPathError": PlanningError,  # pyrep.errors: no path (linear or RRT)
    "InvalidActionError": InvalidActionError,  # rlbench: malformed action or target outside the workspace
    "DemoError": PlanningError,  # rlbench: the scripted demo did not reach success
    "NoWaypointsError": PlanningError,
    "WaypointError": PlanningError,  # rlbench: a waypoint cannot be reached in this layout
    "BoundaryError": SimError,  # rlbench: objects could not be placed in the workspace
    "TaskEnvironmentError": SimError,
}


class ObservationFormatError(SimError, ValueError):
    """An RLBench observation that lacks a field or holds an array of the wrong shape."""


@dataclass
class RLBenchBackendConfig:
    """How to start RLBench. ``task_names`` may name any RLBench task file (e.g. "reach_target")."""

    task_names: tuple[str, ...] = tuple(RLBENCH_VARIATION_COUNTS)
    cameras: tuple[str, ...] = CAMERA_NAMES
    image_size: int = IMAGE_SIZE
    headless: bool = True
    depth_in_meters: bool = False
    renderer: str = "opengl"  # PerAct generated its data with "opengl"; RLBench's default is "opengl3"

    def __post_init__(self) -> None:
        if self.image_size < 1:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        if self.renderer not in ("opengl", "opengl3"):
            raise ValueError(f"renderer must be 'opengl' or 'opengl3', got {self.renderer!r}")
        unknown = set(self.cameras) - set(CAMERA_NAMES)
        if unknown:
            raise ValueError(f"unknown cameras {sorted(unknown)}; RLBench's are {CAMERA_NAMES}")


# --- pure helpers (no rlbench needed) -----------------------------------------------------------------------


def translate_rlbench_error(exc: BaseException) -> SimError | None:
    """Our typed error for an RLBench/PyRep exception, or ``None`` if it is not one we know.

    RLBench re-raises a failed path search as its ``InvalidActionError`` (``raise ... from``); when the cause
    is a planning failure the result is a :class:`PlanningError`, since the action itself was well formed.
    """
    if isinstance(exc, SimError):
        return exc
    target = _error_type_for(type(exc))
    if target is None:
        return None
    if target is InvalidActionError:
        cause = exc.__cause__
        while cause is not None:
            cause_type = _error_type_for(type(cause))
            if cause_type is not None and issubclass(cause_type, PlanningError):
                target = cause_type
                break
            cause = cause.__cause__
    return target(f"RLBench {type(exc).__name__}: {exc}")


@contextmanager
def translating_rlbench_errors() -> Iterator[None]:
    """Re-raise RLBench/PyRep errors as our typed errors (chained with ``from``); others pass unchanged."""
    try:
        yield
    except Exception as exc:
        mapped = translate_rlbench_error(exc)
        if mapped is None or mapped is exc:
            raise
        raise mapped from exc


def _error_type_for(cls: type) -> type[SimError] | None:
    for base in cls.__mro__:
        if base.__name__ in _ERROR_TYPES_BY_NAME:
            return _ERROR_TYPES_BY_NAME[base.__name__]
    return None


def rlbench_action_vector(action: KeyframeAction, per_action_collisions: bool) -> np.ndarray:
    """The vector ``MoveArmThenGripper`` expects: 9 floats for the PerAct fork, 8 for upstream RLBench."""
    vector = action.to_vector()
    return vector if per_action_collisions else vector[:8]


def _field(obs: Any, name: str) -> Any:
    value = getattr(obs, name, None)
    if value is None:
        raise ObservationFormatError(
            f"RLBench observation has no {name!r}; enable it in the ObservationConfig"
        )
    return value


def _vector(obs: Any, name: str, size: int | None) -> np.ndarray:
    v = np.asarray(_field(obs, name), dtype=np.float64).reshape(-1)
    if size is not None and v.size != size:
        raise ObservationFormatError(f"{name} must hold {size} values, got {v.size}")
    return v.copy()


def _rgb_uint8(rgb: np.ndarray, name: str) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ObservationFormatError(f"{name} must be (H, W, 3), got {rgb.shape}")
    if rgb.dtype == np.uint8:
        return rgb.copy()
    # Float images in [0, 1], converted as RLBench itself does (scale by 255 and truncate).
    return np.clip(rgb.astype(np.float64) * 255.0, 0, 255).astype(np.uint8)


def _mask_handles(mask: np.ndarray, name: str) -> np.ndarray:
    """Object handles as int32 from RLBench's one-channel mask (float handles) or its RGB-coded form (uint8,
    or floats in [0, 1] straight from the sensor), decoded as the dataset's mask PNGs are."""
    mask = np.asarray(mask)
    if mask.ndim == 2:
        return np.rint(mask).astype(np.int32)
    if mask.ndim == 3 and mask.shape[2] == 3:
        if mask.dtype != np.uint8:
            mask = np.clip(np.rint(mask.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
        return codec.decode_mask(mask)
    raise ObservationFormatError(f"{name} must be (H, W) or (H, W, 3), got {mask.shape}")


def _camera_frame(obs: Any, misc: Mapping[str, Any], cam: str, depth_in_meters: bool) -> CameraFrame:
    calibration = calibration_from_misc(misc, cam, ObservationFormatError)
    intrinsics, extrinsics = calibration.intrinsics, calibration.extrinsics
    near, far = calibration.near, calibration.far

    rgb = _rgb_uint8(_field(obs, f"{cam}_rgb"), f"{cam}_rgb")
    depth = np.asarray(_field(obs, f"{cam}_depth"), dtype=np.float64)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[..., 0]
    if not depth_in_meters:
        depth = near + depth * (far - near)
    mask = _mask_handles(_field(obs, f"{cam}_mask"), f"{cam}_mask")
    if depth.shape != rgb.shape[:2] or mask.shape != rgb.shape[:2]:
        raise ObservationFormatError(
            f"{cam}: rgb {rgb.shape[:2]}, depth {depth.shape} and mask {mask.shape} must have the same size"
        )
    return CameraFrame(rgb, depth.astype(np.float32), mask, intrinsics.copy(), extrinsics.copy(), near, far)


def convert_observation(
    obs: Any, cameras: Sequence[str] = CAMERA_NAMES, depth_in_meters: bool = False
) -> Observation:
    """Our :class:`Observation` from anything shaped like RLBench's ``Observation``.

    Reads ``<cam>_rgb`` / ``<cam>_depth`` / ``<cam>_mask`` for each camera, the low-dimensional fields and
    ``misc`` (per camera ``<cam>_camera_{extrinsics,intrinsics,near,far}``). ``depth_in_meters`` says how the
    depth was captured: False (RLBench's default) means normalised in [0, 1] between the clip planes.
    Calibration of the converted cameras moves into the frames; every other ``misc`` entry is kept.
    """
    misc = getattr(obs, "misc", None)
    if not isinstance(misc, Mapping):
        raise ObservationFormatError("RLBench observation has no misc dict (camera calibration)")
    frames = {cam: _camera_frame(obs, misc, cam, depth_in_meters) for cam in cameras}
    loaded_keys = calibration_keys(cameras)
    ignore = getattr(obs, "ignore_collisions", None)  # only the PerAct fork records it
    return Observation(
        cameras=frames,
        joint_positions=_vector(obs, "joint_positions", 7),
        joint_velocities=_vector(obs, "joint_velocities", 7),
        joint_forces=_vector(obs, "joint_forces", 7),
        gripper_open=float(_field(obs, "gripper_open")),
        gripper_pose=_vector(obs, "gripper_pose", 7),
        gripper_joint_positions=_vector(obs, "gripper_joint_positions", 2),
        gripper_touch_forces=_vector(obs, "gripper_touch_forces", 6),
        task_low_dim_state=_vector(obs, "task_low_dim_state", None),
        ignore_collisions=1.0 if ignore is None else float(np.asarray(ignore).reshape(-1)[0]),
        extra_misc={k: v for k, v in misc.items() if k not in loaded_keys},
    )


def check_coppeliasim(environ: Mapping[str, str] | None = None) -> Path:
    """The CoppeliaSim folder named by ``COPPELIASIM_ROOT``; raises if it is unset or not an install."""
    env = os.environ if environ is None else environ
    root = env.get("COPPELIASIM_ROOT", "")
    if not root:
        raise BackendUnavailableError(f"COPPELIASIM_ROOT is not set. {INSTALL_HINT}")
    path = Path(root)
    if not path.is_dir():
        raise BackendUnavailableError(f"COPPELIASIM_ROOT={root} is not a directory. {INSTALL_HINT}")
    if not any(path.glob("libcoppeliaSim.so*")):
        raise BackendUnavailableError(
            f"COPPELIASIM_ROOT={root} holds no libcoppeliaSim.so, so it is not a CoppeliaSim 4.1 install. "
            f"{INSTALL_HINT}"
        )
    return path


def load_rlbench(environ: Mapping[str, str] | None = None) -> SimpleNamespace:
    """Check CoppeliaSim, then import the PyRep/RLBench classes the backend uses."""
    env = os.environ if environ is None else environ
    root = check_coppeliasim(env)
    try:
        from pyrep.const import RenderMode
        from rlbench.action_modes.action_mode import MoveArmThenGripper
        from rlbench.action_modes.arm_action_modes import EndEffectorPoseViaPlanning
        from rlbench.action_modes.gripper_action_modes import Discrete
        from rlbench.environment import Environment
        from rlbench.observation_config import CameraConfig, ObservationConfig
        from rlbench.utils import name_to_task_class
    except (ImportError, OSError) as exc:
        library_path = env.get("LD_LIBRARY_PATH", "").split(os.pathsep)
        note = "" if str(root) in library_path else f" LD_LIBRARY_PATH does not contain {root}."
        raise BackendUnavailableError(f"cannot import PyRep/RLBench ({exc}).{note} {INSTALL_HINT}") from exc
    return SimpleNamespace(
        RenderMode=RenderMode,
        MoveArmThenGripper=MoveArmThenGripper,
        EndEffectorPoseViaPlanning=EndEffectorPoseViaPlanning,
        Discrete=Discrete,
        Environment=Environment,
        CameraConfig=CameraConfig,
        ObservationConfig=ObservationConfig,
        name_to_task_class=name_to_task_class,
    )


# --- the backend --------------------------------------------------------------------------------------------


@dataclass
class _Episode:
    info: EpisodeInfo
    rng_state: tuple[Any, Any]  # numpy and Python RNG states taken right before the task reset
    success: bool = False


class RLBenchBackend:
    """:class:`~sim_bridge.backend.SimBackend` on RLBench. Needs CoppeliaSim 4.1, PyRep and RLBench."""

    def __init__(self, config: RLBenchBackendConfig | None = None) -> None:
        self.config = config if config is not None else RLBenchBackendConfig()
        self._rl = load_rlbench()
        self._arm_mode = self._rl.EndEffectorPoseViaPlanning()
        # The PerAct fork's arm mode takes ignore_collisions per action; upstream's does not.
        arm_parameters = inspect.signature(self._arm_mode.action).parameters
        self._per_action_collisions = "ignore_collisions" in arm_parameters
        action_mode = self._rl.MoveArmThenGripper(
            arm_action_mode=self._arm_mode, gripper_action_mode=self._rl.Discrete()
        )
        self._env = self._rl.Environment(
            action_mode=action_mode, obs_config=self._observation_config(), headless=self.config.headless
        )
        self._env.launch()
        self._task_env: Any = None
        self._task_name: str | None = None
        self._episode: _Episode | None = None
        self._closed = False

    def _observation_config(self) -> Any:
        rl, cfg = self._rl, self.config
        render_mode = rl.RenderMode.OPENGL if cfg.renderer == "opengl" else rl.RenderMode.OPENGL3

        def camera(enabled: bool) -> Any:
            cam = rl.CameraConfig(
                image_size=(cfg.image_size, cfg.image_size),
                render_mode=render_mode,
                masks_as_one_channel=True,
                depth_in_meters=cfg.depth_in_meters,
            )
            cam.set_all(enabled)
            cam.point_cloud = False  # rebuilt from depth + misc when needed, as RLBench datasets are
            return cam

        return rl.ObservationConfig(
            left_shoulder_camera=camera("left_shoulder" in cfg.cameras),
            right_shoulder_camera=camera("right_shoulder" in cfg.cameras),
            overhead_camera=camera(False),
            wrist_camera=camera("wrist" in cfg.cameras),
            front_camera=camera("front" in cfg.cameras),
            joint_velocities=True,
            joint_positions=True,
            joint_forces=True,
            gripper_open=True,
            gripper_pose=True,
            gripper_matrix=True,
            gripper_joint_positions=True,
            gripper_touch_forces=True,
            task_low_dim_state=True,
        )

    # SimBackend ---------------------------------------------------------------------------------------------

    def task_names(self) -> list[str]:
        return list(self.config.task_names)

    def variation_count(self, task: str) -> int:
        self._check_task(task)
        if task == self._task_name:
            return int(self._task_env.variation_count())
        if task in RLBENCH_VARIATION_COUNTS:
            return RLBENCH_VARIATION_COUNTS[task]
        return int(self._load_task(task).variation_count())  # loading another task ends the current episode

    def reset(self, task: str, variation: int, seed: int) -> tuple[EpisodeInfo, Observation]:
        self._check_task(task)
        if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2**32) (numpy's legacy RNG), got {seed!r}")
        task_env = self._load_task(task)
        count = int(task_env.variation_count())
        if not 0 <= variation < count:
            raise UnknownVariationError(f"{task} has variations 0..{count - 1}, got {variation}")
        task_env.set_variation(variation)
        np.random.seed(seed)
        random.seed(seed)
        rng_state = (np.random.get_state(), random.getstate())
        self._episode = None
        with translating_rlbench_errors():
            descriptions, rl_obs = task_env.reset()
        info = EpisodeInfo(task, variation, [str(d) for d in descriptions], seed)
        self._episode = _Episode(info, rng_state)
        return info, self._convert(rl_obs)

    def step(self, action: KeyframeAction, on_frame: FrameCallback | None = None) -> StepResult:
        episode = self._require_episode()
        if not self._per_action_collisions and hasattr(self._arm_mode, "_collision_checking"):
            # Upstream RLBench fixes collision checking per arm mode; apply this action's flag to it.
            self._arm_mode._collision_checking = not action.ignore_collisions
        vector = rlbench_action_vector(action, self._per_action_collisions)
        frames = [0]
        # RLBench calls the scene's step callback once per physics step of the arm's path (TaskEnvironment
        # keeps the scene private; without it, frames stay uncounted and on_frame is not called).
        scene = getattr(self._task_env, "_scene", None)
        previous = getattr(scene, "_step_callback", None)
        if scene is not None:
            scene.register_step_callback(self._frame_counter(scene, frames, on_frame))
        try:
            with translating_rlbench_errors():
                rl_obs, reward, _terminate = self._task_env.step(vector)
        finally:
            if scene is not None:
                scene.register_step_callback(previous)
        episode.success = float(reward) >= 1.0
        return StepResult(self._convert(rl_obs), episode.success, frames[0])

    def _frame_counter(
        self, scene: Any, frames: list[int], on_frame: FrameCallback | None
    ) -> Callable[[], None]:
        def count() -> None:
            frames[0] += 1
            if on_frame is not None:
                on_frame(self._convert(scene.get_observation()))

        return count

    def observation(self) -> Observation:
        self._require_episode()
        return self._convert(self._task_env.get_observation())

    def success(self) -> bool:
        return self._require_episode().success

    def demo(self, on_frame: FrameCallback | None = None) -> list[Observation]:
        """RLBench's scripted live demo of the current episode's layout (one attempt: a failure raises
        :class:`PlanningError` rather than silently switching to another layout)."""
        episode = self._require_episode()
        np.random.set_state(episode.rng_state[0])
        random.setstate(episode.rng_state[1])
        callback = None if on_frame is None else (lambda rl_obs: on_frame(self._convert(rl_obs)))
        try:
            with translating_rlbench_errors():
                demos = self._task_env.get_demos(
                    1, live_demos=True, callable_each_step=callback, max_attempts=1
                )
        except RuntimeError as exc:  # RLBench's own message once its attempts are used up
            if str(exc).startswith("Could not collect demos"):
                raise PlanningError(f"RLBench could not record a demo of {episode.info.task}: {exc}") from exc
            raise
        episode.success = True  # RLBench raises instead of returning a demo that does not succeed
        return [self._convert(rl_obs) for rl_obs in demos[0]]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._episode = None
            self._env.shutdown()

    def __enter__(self) -> RLBenchBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # internals ----------------------------------------------------------------------------------------------

    def _convert(self, rl_obs: Any) -> Observation:
        return convert_observation(rl_obs, self.config.cameras, self.config.depth_in_meters)

    def _check_open(self) -> None:
        if self._closed:
            raise SimError("the RLBench backend is closed")

    def _check_task(self, task: str) -> None:
        self._check_open()
        if task not in self.config.task_names:
            raise UnknownTaskError(f"unknown task {task!r}; served: {list(self.config.task_names)}")

    def _require_episode(self) -> _Episode:
        self._check_open()
        if self._episode is None:
            raise SimError("no episode: call reset() first")
        return self._episode

    def _load_task(self, task: str) -> Any:
        """The RLBench TaskEnvironment for ``task``; loading a task replaces the one in the scene."""
        if task != self._task_name:
            try:
                task_class = self._rl.name_to_task_class(task)
            except Exception as exc:  # rlbench's InvalidTaskName
                raise UnknownTaskError(f"RLBench has no task {task!r}: {exc}") from exc
            self._task_env = self._env.get_task(task_class)
            self._task_name = task
            self._episode = None
        return self._task_env
