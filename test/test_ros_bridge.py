"""The sim bridge end to end over a real ROS 2 graph (loopback only), plus its ROS-free worker.

The bridge runs as a subprocess (``python -m sim_bridge.ros.bridge_node``) exactly as users start it; this
process holds a client node spun by a SingleThreadedExecutor in a background thread. Tests run in file order
and share the bridge; the last one stops it with SIGTERM and checks the clean exit.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ros_test_support import SpinningClient, environment, require_module, wait_for  # noqa: E402

require_module("rclpy")
pytestmark = pytest.mark.slow  # every test here starts the bridge node process

from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from mirror_common.ros.qos import command_qos, latched_qos, sensor_qos  # noqa: E402
from sim_bridge.cameras import CAMERA_NAMES, RLBENCH_CAMERAS, look_at_extrinsics  # noqa: E402
from sim_bridge.errors import BackendUnavailableError  # noqa: E402
from sim_bridge.ros.errors import BridgeBusyError  # noqa: E402
from sim_bridge.ros.messages import action_to_message, status_from_message  # noqa: E402
from sim_bridge.ros.observation_sync import CameraSet, CameraSetSynchronizer, subscribe_camera_sets  # noqa: E402
from sim_bridge.ros.status import ActionRejection, EpisodeStatus  # noqa: E402
from sim_bridge.ros.topics import (  # noqa: E402
    ACTION_REJECTED_TOPIC,
    EPISODE_STATUS_TOPIC,
    INSTRUCTION_TOPIC,
    KEYFRAME_ACTION_TOPIC,
    NODE_NAME,
    PLAY_DEMO_SERVICE,
    RESET_EPISODE_SERVICE,
    STOP_SERVICE,
    camera_topic,
)

DOMAIN_ID = 171  # distinct from every other test module
REPO = Path(__file__).resolve().parents[1]
UNREACHABLE = [0.7, 0.5, 1.7, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # inside the workspace, 1.5 m from the base


@pytest.fixture(scope="module")
def ros_env():
    """Loopback-only discovery on this module's domain, set before rclpy.init and inherited by the bridge."""
    with environment(ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST"):
        yield


@pytest.fixture(scope="module")
def bridge(ros_env, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("bridge") / "bridge.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sim_bridge.ros.bridge_node", "--ros-args", "-p", "publish_rate:=10.0"],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc.log_path = log_path  # type: ignore[attr-defined]
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Client(SpinningClient):
    """Test-side node: synchronised camera sets, status, services, parameter client, action publisher."""

    statuses: list[EpisodeStatus]

    def __init__(self) -> None:
        super().__init__("bridge_test_client", DOMAIN_ID)
        self.sets: list[CameraSet] = []
        self.sync = CameraSetSynchronizer(on_set=self.sets.append)
        subscribe_camera_sets(self.node, self.sync)
        self.raw: dict[str, object] = {}
        for kind, msg_type in (("image_raw", Image), ("depth", Image), ("camera_info", CameraInfo)):
            self.node.create_subscription(
                msg_type,
                camera_topic("front", kind),
                lambda m, k=kind: self.raw.__setitem__(k, m),
                sensor_qos(),
            )
        self.instructions: list[str] = []
        self.node.create_subscription(
            String,
            EPISODE_STATUS_TOPIC,
            lambda m: self.statuses.append(status_from_message(m)),
            latched_qos(),
        )
        self.node.create_subscription(
            String, INSTRUCTION_TOPIC, lambda m: self.instructions.append(m.data), latched_qos()
        )
        self.rejections: list[ActionRejection] = []
        self.node.create_subscription(
            String,
            ACTION_REJECTED_TOPIC,
            lambda m: self.rejections.append(ActionRejection.from_json(m.data)),
            command_qos(),
        )
        self.actions = self.node.create_publisher(
            type(action_to_message(UNREACHABLE)), KEYFRAME_ACTION_TOPIC, command_qos()
        )
        self.services = {
            name: self.node.create_client(Trigger, name)
            for name in (RESET_EPISODE_SERVICE, PLAY_DEMO_SERVICE, STOP_SERVICE)
        }
        self.parameters = AsyncParameterClient(self.node, NODE_NAME)
        self.start_spinning()

    # -- helpers -------------------------------------------------------------------------------------------
    def result(self, future, timeout: float = 30.0):
        wait_for(future.done, timeout, "a service response")
        return future.result()

    def call(self, service: str, timeout: float = 30.0) -> Trigger.Response:
        client = self.services[service]
        assert client.wait_for_service(timeout_sec=timeout), f"service {service} not available"
        return self.result(client.call_async(Trigger.Request()), timeout)

    def set_parameters(self, **values) -> list:
        assert self.parameters.wait_for_services(timeout_sec=30.0)
        future = self.parameters.set_parameters([Parameter(k, value=v) for k, v in values.items()])
        return list(self.result(future).results)

    def reset(self, **values) -> EpisodeStatus:
        if values:
            results = self.set_parameters(**values)
            assert all(r.successful for r in results), [r.reason for r in results]
        episode = self.status.episode if self.statuses else 0
        response = self.call(RESET_EPISODE_SERVICE)
        assert response.success, response.message
        wait_for(
            lambda: self.statuses and self.status.episode > episode and not self.status.busy,
            10,
            "the reset status",
        )
        assert self.status.state == "running"
        return self.status

    def send_action(self, vector) -> None:
        msg = action_to_message(vector) if len(vector) == 9 and np.all(np.isfinite(vector)) else None
        if msg is None:  # deliberately malformed: bypass the sender-side validation
            from std_msgs.msg import Float64MultiArray

            msg = Float64MultiArray()
            msg.data = [float(v) for v in vector]
        self.actions.publish(msg)

    def wait_final(self, timeout: float) -> EpisodeStatus:
        wait_for(
            lambda: self.status.state not in ("running", "demo", "executing"), timeout, "the episode to end"
        )
        return self.status


@pytest.fixture(scope="module")
def client(bridge):
    c = Client()
    yield c
    c.close()


# -- ROS graph tests (file order matters: the last one stops the bridge) ----------------------------------


def test_bridge_streams_complete_time_consistent_camera_sets(client, bridge):
    wait_for(lambda: len(client.sets) >= 3, 60, f"camera sets ({client.sync.describe_missing()})")
    assert client.statuses and client.status.state == "running" and client.status.episode == 1
    latest = client.sets[-1]
    assert set(latest.frames) == set(CAMERA_NAMES)
    for name, frame in latest.frames.items():
        spec = RLBENCH_CAMERAS[name]
        assert frame.rgb.shape == (128, 128, 3) and frame.rgb.dtype == np.uint8
        assert frame.depth.shape == (128, 128) and frame.depth.dtype == np.float32
        assert np.nanmin(frame.depth) >= spec.near and np.nanmax(frame.depth) <= spec.far
        np.testing.assert_allclose(frame.intrinsics, spec.intrinsics(128))  # back in RLBench's convention
        if not spec.mounted_on_tip:
            expected = look_at_extrinsics(np.asarray(spec.position), np.asarray(spec.axis))
            np.testing.assert_allclose(frame.extrinsics, expected, atol=1e-9)
    assert latest.frames["front"].rgb.std() > 5  # a rendered scene, not a blank image
    stamps = [s.stamp_ns for s in client.sets]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert client.sync.stats.malformed == 0
    rgb, depth, info = client.raw["image_raw"], client.raw["depth"], client.raw["camera_info"]
    assert (rgb.encoding, rgb.width, rgb.height, rgb.header.frame_id) == (
        "rgb8",
        128,
        128,
        "front_optical_frame",
    )
    assert (depth.encoding, depth.step) == ("32FC1", 4 * 128)
    f = abs(RLBENCH_CAMERAS["front"].intrinsics(128)[0, 0])
    np.testing.assert_allclose(info.k, [f, 0, 64, 0, f, 64, 0, 0, 1])  # OpenCV: positive focal length
    assert info.distortion_model == "plumb_bob" and not any(info.d)


def test_reset_uses_parameters_set_through_the_parameter_client(client):
    from sim_bridge.tasks import make_task

    first = client.reset(task="push_buttons", variation=1, seed=5)
    assert (first.task, first.variation, first.seed, first.step) == ("push_buttons", 1, 5, 0)
    assert first.instruction == make_task("push_buttons").descriptions(1)[0]
    wait_for(
        lambda: client.instructions and client.instructions[-1] == first.instruction, 5, "the instruction"
    )
    second = client.reset(seed=-1)  # -1: the next seed
    assert (second.seed, second.episode) == (6, first.episode + 1)


def test_invalid_parameters_are_rejected_with_a_reason(client):
    (unknown,) = client.set_parameters(task="no_such_task")
    assert not unknown.successful and "unknown task 'no_such_task'" in unknown.reason
    (variation,) = client.set_parameters(variation=50)
    assert not variation.successful and "variations 0..49" in variation.reason
    (rate,) = client.set_parameters(publish_rate=-1.0)
    assert not rate.successful
    values = client.result(client.parameters.get_parameters(["task", "variation"])).values
    assert (values[0].string_value, values[1].integer_value) == ("push_buttons", 1)


@pytest.mark.parametrize(
    ("vector", "reason"),
    [
        ([0.2, float("nan"), 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0], "NaN"),
        ([0.2, 0.0, 1.0, 1.0, 0.0], "8 or 9 values"),
    ],
)
def test_malformed_actions_fail_the_episode_and_the_bridge_keeps_streaming(client, vector, reason):
    client.reset(variation=0, seed=1)
    client.send_action(vector)
    final = client.wait_final(10)
    assert final.state == "failure" and "invalid action" in final.reason and reason in final.reason
    count = len(client.sets)
    wait_for(lambda: len(client.sets) >= count + 3, 10, "camera sets after the rejected action")
    client.send_action([0.2, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0])  # no running episode: ignored
    time.sleep(0.5)
    assert client.status == final


def test_an_unreachable_action_ends_the_episode_as_failure(client):
    client.reset(seed=2)
    client.send_action(UNREACHABLE)
    final = client.wait_final(30)
    assert final.state == "failure" and "planning failed" in final.reason and "IK" in final.reason
    assert final.step == 0 and not final.busy


def test_max_steps_ends_the_episode(client):
    (ok,) = client.set_parameters(max_steps=1)
    assert ok.successful
    client.reset(seed=3)
    wait_for(lambda: client.sets, 5, "a camera set")
    # 5 cm below the home tip pose (0.251, 0, 1.451), same orientation: a short straight move
    client.send_action([0.25, 0.0, 1.40, 0.9962, 0.0002, 0.0869, 0.0, 1.0, 0.0])
    final = client.wait_final(60)
    assert final.state == "failure" and "max_steps (1)" in final.reason and final.step == 1
    (ok,) = client.set_parameters(max_steps=25)
    assert ok.successful


@pytest.mark.faults
def test_play_demo_streams_the_motion_and_ends_in_success(client):
    client.reset(task="push_buttons", variation=0, seed=0)
    start = len(client.sets)
    response = client.call(PLAY_DEMO_SERVICE)
    assert response.success, response.message
    wait_for(lambda: client.status.state != "running", 5, "the demo status")
    assert client.status.state == "demo" and client.status.busy  # the response came before the end
    busy = client.call(RESET_EPISODE_SERVICE)
    assert not busy.success and "busy" in busy.message
    client.send_action(UNREACHABLE)  # rejected while busy, not queued, and the sender is told why
    wait_for(lambda: client.rejections, 10, "the bridge's answer to the rejected action")
    rejection = client.rejections[-1]
    assert rejection.reason == "busy" and "playing" in rejection.message
    assert rejection.episode == client.status.episode
    final = client.wait_final(90)
    assert final.state == "success", final.reason
    assert not final.busy and final.step == 0
    time.sleep(0.5)
    assert client.status.state == "success"  # the action sent during the demo never ran
    during = client.sets[start:]
    wrist = np.array([s.frames["wrist"].extrinsics[:3, 3] for s in during])
    assert len(during) >= 15
    assert np.ptp(wrist, axis=0).max() > 0.05  # the wrist camera moved with the arm


def test_stop_aborts_a_running_demo(client):
    client.reset(seed=0)
    assert client.call(PLAY_DEMO_SERVICE).success
    wait_for(lambda: client.status.state == "demo", 5, "the demo to start")
    time.sleep(0.5)
    started = time.monotonic()
    response = client.call(STOP_SERVICE)
    assert response.success and "demo" in response.message
    final = client.wait_final(10)
    assert final.state == "idle" and final.reason == "stopped by request"
    assert time.monotonic() - started < 5
    count = len(client.sets)
    wait_for(lambda: len(client.sets) >= count + 2, 10, "idle streaming after the stop")


def test_rlbench_backend_without_coppeliasim_fails_with_its_clear_error(client, monkeypatch):
    from sim_bridge.ros.bridge_node import SimBridgeNode

    monkeypatch.delenv("COPPELIASIM_ROOT", raising=False)
    with pytest.raises(BackendUnavailableError, match="COPPELIASIM_ROOT is not set"):
        SimBridgeNode(
            context=client.context,
            namespace="/rlbench_check",
            parameter_overrides=[Parameter("backend", value="rlbench")],
        )


@pytest.mark.faults
def test_a_bridge_publishing_the_clock_stamps_with_simulated_time_from_the_first_message(client):
    """Before, its own ROS clock read 0 until its /clock subscription heard a tick, so the start-up status
    and the first camera sets were stamped 0. Here the bridge is never spun: every stamp must still be set."""
    from sim_bridge.ros.bridge_node import SimBridgeNode

    namespace = "/sim_time_check"
    statuses: list[EpisodeStatus] = []
    stamps: list[float] = []
    client.node.create_subscription(
        String, f"{namespace}/{EPISODE_STATUS_TOPIC}", lambda m: statuses.append(status_from_message(m)),
        latched_qos(),
    )  # fmt: skip
    client.node.create_subscription(
        Image, f"{namespace}/{camera_topic('front', 'image_raw')}",
        lambda m: stamps.append(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9), sensor_qos(),
    )  # fmt: skip
    node = SimBridgeNode(
        context=client.context,
        namespace=namespace,
        parameter_overrides=[
            Parameter("use_sim_time", value=True),
            Parameter("publish_clock", value=True),
            Parameter("publish_rate", value=10.0),
        ],
    )
    try:
        wait_for(
            lambda: any(s.state == "running" for s in statuses) and len(stamps) >= 3,
            30,
            "the start-up episode's status and three camera sets",
        )
    finally:
        node.destroy_node()
    # simulated time starts at 1 s
    assert all(1.0 <= status.stamp < 60.0 for status in statuses), statuses
    assert all(1.0 <= stamp < 60.0 for stamp in stamps), stamps


def test_sigterm_stops_the_bridge_cleanly(client, bridge):
    assert bridge.poll() is None, "the bridge died during the tests"
    bridge.send_signal(signal.SIGTERM)  # SIGINT takes the same path (and ends the bench's bridge)
    assert bridge.wait(30) == 0
    log = bridge.log_path.read_text()
    assert "Traceback" not in log and "terminate called" not in log, log[-2000:]
    assert "sim_bridge stopped" in log


# -- the worker without ROS --------------------------------------------------------------------------------


def test_worker_owns_the_backend_rejects_while_busy_and_streams_cached_idle_sets():
    from sim_bridge.bullet.env import BulletBackend
    from sim_bridge.ros.worker import SimWorker, WorkerConfig

    published, statuses = [], []
    worker = SimWorker(BulletBackend, published.append, statuses.append, WorkerConfig(publish_rate=50.0))
    worker.start()
    try:
        assert statuses[-1].state == "idle" and not published  # nothing to render before a reset
        ticket = worker.submit_reset("push_buttons", 0, -1)
        assert ticket.finished.wait(30) and ticket.ok and ticket.message == "push the maroon button"
        assert statuses[-1].seed == 0 and statuses[-1].state == "running"
        wait_for(lambda: len(published) >= 5, 10, "idle sets")
        assert all(o is published[0] for o in published[:5])  # rendered once, re-published while idle
        worker.config.idle_rerender = True
        count = len(published)
        wait_for(lambda: len(published) >= count + 2, 10, "re-rendered idle sets")
        assert published[-1] is not published[-2]
        worker.config.idle_rerender = False
        demo = worker.submit_demo()
        assert demo.started.wait(10)
        with pytest.raises(BridgeBusyError, match="playing the demo"):
            worker.submit_action(np.array(UNREACHABLE))
        worker.request_stop()
        assert demo.finished.wait(20)
        assert statuses[-1].state == "idle" and statuses[-1].reason == "stopped by request"
        again = worker.submit_demo()  # the stopped episode is no longer fresh
        assert again.finished.wait(10) and not again.ok and "freshly reset" in again.message
        bad = worker.submit_reset("nope", 0, 0)
        assert bad.finished.wait(10) and not bad.ok and "unknown task 'nope'" in bad.message
        assert worker.status.state == "idle" and not worker.busy  # the stopped episode is untouched
    finally:
        worker.shutdown()
    assert not worker._thread.is_alive()


@pytest.mark.faults
def test_a_running_episode_without_actions_fails_after_the_action_timeout():
    """A dead policy used to leave the episode 'running' forever."""
    from sim_bridge.bullet.env import BulletBackend
    from sim_bridge.ros.worker import SimWorker, WorkerConfig

    statuses: list[EpisodeStatus] = []
    config = WorkerConfig(publish_rate=50.0, action_timeout=0.5)
    worker = SimWorker(BulletBackend, lambda _: None, statuses.append, config)
    worker.start()
    try:
        assert worker.submit_reset("push_buttons", 0, 0).finished.wait(30)
        assert statuses[-1].state == "running"
        wait_for(lambda: statuses[-1].state == "failure", 10, "the episode to time out")
        assert statuses[-1].reason == "no keyframe action for 0.5 s (is the policy running?)"
        worker.set_action_timeout(0.0)  # 0: an episode waits forever
        assert worker.submit_reset("push_buttons", 0, 1).finished.wait(30)
        time.sleep(1.0)
        assert statuses[-1].state == "running"
    finally:
        worker.shutdown()
