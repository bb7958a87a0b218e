"""RLBench backend: the parts that run without CoppeliaSim (conversion, errors, install checks, lazy imports),
plus the backend's own control flow against a stand-in for RLBench's TaskEnvironment call contract.

CoppeliaSim cannot be installed here, so nothing in this file runs the real simulator.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import sim_bridge.rlbench_backend as rb
from sim_bridge.actions import KeyframeAction
from sim_bridge.cameras import RLBENCH_CAMERAS, look_at_extrinsics, tip_camera_extrinsics
from sim_bridge.errors import (
    BackendUnavailableError,
    IKError,
    InvalidActionError,
    PlanningError,
    SimError,
    UnknownTaskError,
    UnknownVariationError,
)

REPO = Path(__file__).resolve().parents[1]
TABLE_Z = 0.75
SIZE = 128
# Tip pointing straight down (tip z = world -z) above the table.
GRIPPER_POSE = np.array([0.25, 0.05, 1.20, *Rotation.from_euler("x", 180, degrees=True).as_quat()])


def _gripper_matrix(pose: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = Rotation.from_quat(pose[3:]).as_matrix()
    m[:3, 3] = pose[:3]
    return m


def _calibration() -> dict:
    """RLBench-style misc for the 4 cameras plus the overhead one (RLBench reports it too)."""
    misc = {}
    for name, spec in RLBENCH_CAMERAS.items():
        if spec.mounted_on_tip:
            extrinsics = tip_camera_extrinsics(spec, _gripper_matrix(GRIPPER_POSE))
        else:
            extrinsics = look_at_extrinsics(np.array(spec.position), np.array(spec.axis))
        misc[f"{name}_camera_extrinsics"] = extrinsics
        misc[f"{name}_camera_intrinsics"] = spec.intrinsics(SIZE)
        misc[f"{name}_camera_near"] = spec.near
        misc[f"{name}_camera_far"] = spec.far
    misc["overhead_camera_extrinsics"] = look_at_extrinsics(
        np.array([-0.175, 0, 2.43]), np.array([0.423, 0, -0.906])
    )
    misc["overhead_camera_intrinsics"] = RLBENCH_CAMERAS["front"].intrinsics(SIZE)
    misc["overhead_camera_near"], misc["overhead_camera_far"] = 0.01, 3.3
    misc["variation_index"] = 2
    return misc


def _table_depth(intrinsics: np.ndarray, extrinsics: np.ndarray, far: float) -> np.ndarray:
    """Metric z-depth of the plane z = TABLE_Z seen by a camera, clipped at the far plane like a sensor."""
    v, u = np.meshgrid(np.arange(SIZE, dtype=np.float64), np.arange(SIZE, dtype=np.float64), indexing="ij")
    rays = np.stack(
        [
            (u - intrinsics[0, 2]) / intrinsics[0, 0],
            (v - intrinsics[1, 2]) / intrinsics[1, 1],
            np.ones_like(u),
        ],
        -1,
    )
    ray_z = rays @ extrinsics[2, :3]
    with np.errstate(divide="ignore"):
        z = (TABLE_Z - extrinsics[2, 3]) / ray_z
    return np.where((z > 0) & (z < far), z, far)


def _rlbench_observation(seed: int = 0, layout: float = 0.0) -> SimpleNamespace:
    """Shaped like RLBench's Observation: normalised depth, float one-channel masks, uint8 rgb."""
    rng = np.random.default_rng(seed)
    misc = _calibration()
    fields = {}
    for name in ("front", "left_shoulder", "right_shoulder", "wrist"):
        near, far = misc[f"{name}_camera_near"], misc[f"{name}_camera_far"]
        depth_m = _table_depth(misc[f"{name}_camera_intrinsics"], misc[f"{name}_camera_extrinsics"], far)
        fields[f"{name}_rgb"] = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        fields[f"{name}_depth"] = ((depth_m - near) / (far - near)).astype(np.float32)
        handles = rng.integers(0, 94, (SIZE, SIZE)).astype(np.float64)
        fields[f"{name}_mask"] = handles + rng.uniform(
            -1e-4, 1e-4, handles.shape
        )  # float, as RLBench leaves them
        fields[f"{name}_point_cloud"] = None
    fields.update(
        overhead_rgb=None,
        overhead_depth=None,
        overhead_mask=None,
        joint_positions=rng.normal(size=7),
        joint_velocities=rng.normal(size=7),
        joint_forces=rng.normal(size=7),
        gripper_open=1.0,
        gripper_pose=GRIPPER_POSE.copy(),
        gripper_matrix=_gripper_matrix(GRIPPER_POSE),
        gripper_joint_positions=np.array([0.04, 0.04]),
        gripper_touch_forces=np.zeros(6),
        task_low_dim_state=np.array([layout, 1.0, 2.0]),
        misc=misc,
    )
    return SimpleNamespace(**fields)


# --- import and installation checks -------------------------------------------------------------------------


def test_importing_the_module_imports_neither_rlbench_nor_pyrep() -> None:
    code = (
        "import sys, sim_bridge.rlbench_backend\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('rlbench', 'pyrep'))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def _assert_actionable(message: str) -> None:
    for needle in (
        "CoppeliaSim 4.1",
        "COPPELIASIM_ROOT",
        "LD_LIBRARY_PATH",
        "QT_QPA_PLATFORM_PLUGIN_PATH",
        "pip install",
        "PyRep",
        "RLBench",
    ):
        assert needle in message, needle


def test_constructing_without_coppeliasim_raises_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COPPELIASIM_ROOT", raising=False)
    with pytest.raises(BackendUnavailableError) as err:
        rb.RLBenchBackend()
    assert isinstance(err.value, ImportError)
    assert str(err.value).startswith("COPPELIASIM_ROOT is not set")
    _assert_actionable(str(err.value))


def test_coppeliasim_root_is_checked_before_importing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(BackendUnavailableError, match="is not a directory"):
        rb.check_coppeliasim({"COPPELIASIM_ROOT": str(missing)})
    with pytest.raises(BackendUnavailableError, match="holds no libcoppeliaSim.so"):
        rb.load_rlbench({"COPPELIASIM_ROOT": str(tmp_path)})
    (tmp_path / "libcoppeliaSim.so.1").write_bytes(b"")
    assert rb.check_coppeliasim({"COPPELIASIM_ROOT": str(tmp_path)}) == tmp_path


def test_missing_pyrep_is_reported_with_install_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.environ.get("COPPELIASIM_ROOT"):
        pytest.skip("a real CoppeliaSim is configured")
    (tmp_path / "libcoppeliaSim.so").write_bytes(b"")
    monkeypatch.setenv("COPPELIASIM_ROOT", str(tmp_path))
    monkeypatch.setenv("LD_LIBRARY_PATH", "/usr/lib")
    with pytest.raises(BackendUnavailableError) as err:
        rb.RLBenchBackend()
    message = str(err.value)
    assert message.startswith("cannot import PyRep/RLBench")
    assert f"LD_LIBRARY_PATH does not contain {tmp_path}" in message
    _assert_actionable(message)


# --- error translation --------------------------------------------------------------------------------------


def _look_alike(name: str, base: type = Exception) -> type:
    return type(name, (base,), {})


RLIKError = _look_alike("IKError")
RLConfigurationError = _look_alike("ConfigurationError")
RLConfigurationPathError = _look_alike("ConfigurationPathError")
RLInvalidActionError = _look_alike("InvalidActionError")
RLDemoError = _look_alike("DemoError")
RLTaskEnvironmentError = _look_alike("TaskEnvironmentError")


@pytest.mark.parametrize(
    ("rl_error", "expected"),
    [
        (RLIKError, IKError),
        (RLConfigurationError, IKError),
        (RLConfigurationPathError, PlanningError),
        (RLInvalidActionError, InvalidActionError),
        (RLDemoError, PlanningError),
        (RLTaskEnvironmentError, SimError),
        (_look_alike("SubclassedPathError", RLConfigurationPathError), PlanningError),
    ],
)
def test_errors_are_translated_by_class_name(rl_error: type, expected: type) -> None:
    mapped = rb.translate_rlbench_error(rl_error("boom"))
    assert type(mapped) is expected
    assert "boom" in str(mapped) and rl_error.__name__ in str(mapped)


def test_planning_failure_wrapped_in_invalid_action_becomes_planning_error() -> None:
    try:
        try:
            raise RLConfigurationPathError("no path")
        except RLConfigurationPathError as cause:
            raise RLInvalidActionError("A path could not be found.") from cause
    except RLInvalidActionError as exc:
        wrapped = exc
    mapped = rb.translate_rlbench_error(wrapped)
    assert type(mapped) is PlanningError
    # Outside the workspace: RLBench raises InvalidActionError with no cause -> stays an invalid action.
    outside = RLInvalidActionError("A path could not be found because the target is outside of workspace.")
    assert type(rb.translate_rlbench_error(outside)) is InvalidActionError


def test_unknown_errors_pass_through() -> None:
    assert rb.translate_rlbench_error(ValueError("x")) is None
    ours = PlanningError("ours")
    assert rb.translate_rlbench_error(ours) is ours
    original = KeyError("k")
    with pytest.raises(KeyError) as err, rb.translating_rlbench_errors():
        raise original
    assert err.value is original
    with pytest.raises(IKError) as err, rb.translating_rlbench_errors():
        raise RLIKError("no ik")
    assert isinstance(err.value.__cause__, RLIKError)


# --- action vector and config -------------------------------------------------------------------------------


def test_action_vector_for_both_rlbench_flavours() -> None:
    action = KeyframeAction.from_vector([0.1, 0.2, 0.9, 0, 0, 0, 1, 1.0, 1.0])
    fork = rb.rlbench_action_vector(action, per_action_collisions=True)
    upstream = rb.rlbench_action_vector(action, per_action_collisions=False)
    assert fork.tolist() == [0.1, 0.2, 0.9, 0, 0, 0, 1, 1.0, 1.0]
    assert upstream.tolist() == fork[:8].tolist()


def test_task_table_and_config() -> None:
    assert len(rb.RLBENCH_VARIATION_COUNTS) == 18
    assert sum(rb.RLBENCH_VARIATION_COUNTS.values()) == 249  # supplement: 18 tasks, 249 variations
    with pytest.raises(ValueError, match="renderer"):
        rb.RLBenchBackendConfig(renderer="vulkan")
    with pytest.raises(ValueError, match="overhead"):
        rb.RLBenchBackendConfig(cameras=("front", "overhead"))


# --- observation conversion ---------------------------------------------------------------------------------


def test_conversion_gives_metric_depth_and_consistent_point_clouds() -> None:
    raw = _rlbench_observation()
    obs = rb.convert_observation(raw)
    assert sorted(obs.cameras) == ["front", "left_shoulder", "right_shoulder", "wrist"]
    for name, frame in obs.cameras.items():
        near, far = raw.misc[f"{name}_camera_near"], raw.misc[f"{name}_camera_far"]
        expected = _table_depth(
            raw.misc[f"{name}_camera_intrinsics"], raw.misc[f"{name}_camera_extrinsics"], far
        )
        assert frame.depth.dtype == np.float32 and frame.depth.shape == (SIZE, SIZE)
        np.testing.assert_allclose(frame.depth, expected, rtol=1e-6, atol=1e-6)
        assert (frame.near, frame.far) == (near, far)
        # Points of pixels that see the table land on the table plane.
        on_table = expected < far - 1e-6
        assert on_table.mean() > 0.3, name
        np.testing.assert_allclose(frame.point_cloud()[on_table][:, 2], TABLE_Z, atol=1e-4)
        np.testing.assert_array_equal(frame.rgb, getattr(raw, f"{name}_rgb"))
        assert frame.mask.dtype == np.int32
        np.testing.assert_array_equal(frame.mask, np.rint(getattr(raw, f"{name}_mask")).astype(np.int32))
    # The tip is 0.45 m above the table and the wrist camera 0.092 m behind it: ~0.54 m at the image centre.
    assert 0.52 < obs.cameras["wrist"].depth[64, 64] < 0.56


def test_conversion_keeps_low_dim_fields_and_misc() -> None:
    raw = _rlbench_observation()
    obs = rb.convert_observation(raw)
    np.testing.assert_array_equal(obs.joint_positions, raw.joint_positions)
    np.testing.assert_array_equal(obs.gripper_pose, GRIPPER_POSE)
    np.testing.assert_allclose(obs.gripper_matrix, raw.gripper_matrix, atol=1e-12)
    assert obs.gripper_open == 1.0 and obs.gripper_joint_positions.tolist() == [0.04, 0.04]
    assert obs.task_low_dim_state.tolist() == [0.0, 1.0, 2.0]
    assert obs.ignore_collisions == 1.0  # upstream RLBench observations have no such field
    misc = obs.misc()
    assert misc.keys() == raw.misc.keys()
    for key, value in raw.misc.items():
        np.testing.assert_array_equal(misc[key], value)
    assert "front_camera_extrinsics" not in obs.extra_misc and obs.extra_misc["variation_index"] == 2
    # Converted arrays are copies: changing RLBench's buffers later does not change ours.
    raw.joint_positions[:] = 0.0
    raw.misc["front_camera_extrinsics"][:] = 0.0
    assert obs.joint_positions.any() and obs.cameras["front"].extrinsics.any()


def test_conversion_variants() -> None:
    raw = _rlbench_observation()
    metric = _rlbench_observation()
    for name in ("front", "wrist"):
        near, far = raw.misc[f"{name}_camera_near"], raw.misc[f"{name}_camera_far"]
        setattr(
            metric, f"{name}_depth", near + getattr(raw, f"{name}_depth").astype(np.float64) * (far - near)
        )
    a = rb.convert_observation(raw, cameras=("front", "wrist"))
    b = rb.convert_observation(metric, cameras=("front", "wrist"), depth_in_meters=True)
    np.testing.assert_allclose(a.cameras["front"].depth, b.cameras["front"].depth, rtol=1e-6)
    assert sorted(a.cameras) == ["front", "wrist"] and "left_shoulder_camera_near" in a.extra_misc
    # Float RGB in [0, 1] and three-channel colour-coded masks, as RLBench hands them over when configured so.
    raw.front_rgb = np.full((SIZE, SIZE, 3), 0.5)
    handles = np.full((SIZE, SIZE), 300)
    raw.front_mask = np.stack([handles % 256, (handles // 256) % 256, handles // 65536], -1) / 255.0
    raw.ignore_collisions = np.array(0.0)
    obs = rb.convert_observation(raw)
    assert obs.cameras["front"].rgb.dtype == np.uint8 and int(obs.cameras["front"].rgb[0, 0, 0]) == 127
    assert (obs.cameras["front"].mask == 300).all()
    assert obs.ignore_collisions == 0.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda o: setattr(o, "wrist_depth", None), "wrist_depth"),
        (lambda o: setattr(o, "task_low_dim_state", None), "task_low_dim_state"),
        (lambda o: setattr(o, "joint_positions", np.zeros(6)), "joint_positions must hold 7"),
        (lambda o: o.misc.pop("front_camera_far"), "front_camera_far"),
        (lambda o: setattr(o, "front_mask", np.zeros((64, 64))), "same size"),
        (lambda o: setattr(o, "misc", None), "misc"),
        (lambda o: o.misc.update(front_camera_near=5.0), "near < far"),
    ],
)
def test_conversion_rejects_malformed_observations(change, message: str) -> None:
    raw = _rlbench_observation()
    change(raw)
    with pytest.raises(rb.ObservationFormatError, match=message):
        rb.convert_observation(raw)


# --- backend control flow against a stand-in for RLBench's TaskEnvironment --------------------------------
# CoppeliaSim cannot run here. These classes follow the call contract of RLBench's Environment /
# TaskEnvironment / Scene (reset draws the layout from numpy's global RNG, get_demos resets the task itself,
# step runs scene.step per path step and raises InvalidActionError "from" ConfigurationPathError) so that the
# backend's own logic is exercised; they say nothing about RLBench's physics.


class _Scene:
    def __init__(self) -> None:
        self._step_callback = None

    def register_step_callback(self, func) -> None:
        self._step_callback = func

    def step(self) -> None:
        if self._step_callback is not None:
            self._step_callback()

    def get_observation(self) -> SimpleNamespace:
        return _rlbench_observation()


class _TaskEnvironment:
    def __init__(self, name: str) -> None:
        self.name, self._scene, self.variation, self.layout, self.steps = name, _Scene(), None, None, []

    def variation_count(self) -> int:
        return 3

    def set_variation(self, v: int) -> None:
        self.variation = v

    def reset(self):
        self.layout = float(np.random.uniform())
        return [f"{self.name} v{self.variation}", "paraphrase"], _rlbench_observation(layout=self.layout)

    def get_observation(self) -> SimpleNamespace:
        return _rlbench_observation(layout=self.layout)

    def step(self, action):
        self.steps.append(np.asarray(action))
        if action[0] > 5.0:
            try:
                raise RLConfigurationPathError("no path")
            except RLConfigurationPathError as exc:
                raise RLInvalidActionError("A path could not be found.") from exc
        for _ in range(4):
            self._scene.step()
        return _rlbench_observation(layout=self.layout), float(action[2] < 1.0), False

    def get_demos(self, amount, live_demos, callable_each_step=None, max_attempts=10):
        assert amount == 1 and live_demos and max_attempts == 1
        self.reset()
        frames = [_rlbench_observation(layout=self.layout) for _ in range(3)]
        for frame in frames:
            if callable_each_step is not None:
                callable_each_step(frame)
        return [frames]


class _ArmMode:
    def action(self, scene, action, ignore_collisions: bool = True) -> None:
        """PerAct-fork signature."""


class _Environment:
    def __init__(self, action_mode, obs_config, headless) -> None:
        self.obs_config, self.headless, self.launched, self.shut = obs_config, headless, False, False

    def launch(self) -> None:
        self.launched = True

    def get_task(self, task_class) -> _TaskEnvironment:
        return _TaskEnvironment(task_class)

    def shutdown(self) -> None:
        self.shut = True


class _CameraConfig:
    def __init__(self, **kwargs) -> None:
        self.__dict__.update(kwargs)

    def set_all(self, value: bool) -> None:
        self.rgb = self.depth = self.point_cloud = self.mask = value


def _name_to_task_class(name: str) -> str:
    if name not in rb.RLBENCH_VARIATION_COUNTS:
        raise _look_alike("InvalidTaskName")(name)
    return name


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch):
    stand_in = SimpleNamespace(
        RenderMode=SimpleNamespace(OPENGL="opengl", OPENGL3="opengl3"),
        MoveArmThenGripper=lambda arm_action_mode, gripper_action_mode: (
            arm_action_mode,
            gripper_action_mode,
        ),
        EndEffectorPoseViaPlanning=_ArmMode,
        Discrete=object,
        Environment=_Environment,
        CameraConfig=_CameraConfig,
        ObservationConfig=lambda **kwargs: SimpleNamespace(**kwargs),
        name_to_task_class=_name_to_task_class,
    )
    monkeypatch.setattr(rb, "load_rlbench", lambda: stand_in)
    backend = rb.RLBenchBackend()
    yield backend
    backend.close()


def test_backend_configures_rlbench_like_peract(backend: rb.RLBenchBackend) -> None:
    cfg = backend._env.obs_config
    assert backend._env.launched and backend._env.headless
    for cam in ("front_camera", "left_shoulder_camera", "right_shoulder_camera", "wrist_camera"):
        c = getattr(cfg, cam)
        assert (c.rgb, c.depth, c.mask, c.point_cloud) == (True, True, True, False)
        assert c.image_size == (128, 128) and c.masks_as_one_channel and c.depth_in_meters is False
    assert not cfg.overhead_camera.rgb and cfg.task_low_dim_state and cfg.gripper_joint_positions
    assert backend._per_action_collisions


def test_backend_reset_step_demo_flow(backend: rb.RLBenchBackend) -> None:
    with pytest.raises(SimError, match="reset"):
        backend.observation()
    with pytest.raises(UnknownTaskError):
        backend.reset("reach_target", 0, 0)
    with pytest.raises(UnknownVariationError):
        backend.reset("open_drawer", 3, 0)
    info, obs = backend.reset("open_drawer", 1, seed=42)
    assert info.instruction == "open_drawer v1" and info.seed == 42 and not backend.success()
    layout = obs.task_low_dim_state[0]
    _, again = backend.reset("open_drawer", 1, seed=42)
    assert again.task_low_dim_state[0] == layout  # same seed, same layout

    frames = []
    result = backend.step(KeyframeAction.from_vector([0.3, 0, 0.9, 0, 0, 0, 1, 0, 1]), frames.append)
    assert result.frames == 4 and len(frames) == 4 and result.success and backend.success()
    assert backend._task_env.steps[-1].tolist() == [0.3, 0, 0.9, 0, 0, 0, 1, 0, 1]
    assert backend._task_env._scene._step_callback is None  # the frame hook is removed after the step

    with pytest.raises(PlanningError) as err:
        backend.step(KeyframeAction.from_vector([9.0, 0, 0.9, 0, 0, 0, 1, 1, 0]))
    assert isinstance(err.value.__cause__, RLInvalidActionError)

    np.random.uniform(size=10)  # whatever ran in between, the demo replays the episode's layout
    streamed = []
    demo = backend.demo(streamed.append)
    assert len(demo) == len(streamed) == 3
    assert all(o.task_low_dim_state[0] == layout for o in demo)

    backend.close()
    with pytest.raises(SimError, match="closed"):
        backend.reset("open_drawer", 0, 0)
    assert backend._env.shut
