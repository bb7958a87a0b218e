"""The Mirror ROS 2 stack end to end: bridge, policy, perception and mirror loop as real processes.

Part 1 tests the ROS-free pieces (acting rules, video window, task draws, payloads, summary). Part 2 starts
``mirror_bringup --episodes 0`` (all four nodes, the loop idle) with a tiny untrained checkpoint and drives it
from a client node in this process: perception recognises a demonstration, the policy acts on an unknown
instruction, survives a malformed image, resumes after a restart mid-episode, and Ctrl-C (SIGINT to bringup)
stops everything. Part 3 (slow) runs the user's command, ``mirror_bringup --episodes 1``, to completion, and
interrupts a second run in the middle (exit code 130).

Every process runs with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` on domain :data:`DOMAIN_ID`.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from ros_test_support import SpinningClient, environment, require_module, wait_for  # noqa: E402

require_module("rclpy")
pytestmark = pytest.mark.slow  # every test here starts node processes

from mirror.ros.acting import ActingState, InputLimits, observation_from_camera_set  # noqa: E402
from mirror.ros.bringup import exit_code  # noqa: E402
from mirror.ros.launch_config import child_environment, node_command, node_spec  # noqa: E402
from mirror.ros.loop_report import LoopEpisode, LoopSummary  # noqa: E402
from mirror.ros.policy_messages import PolicyActionInfo, PolicyState  # noqa: E402
from mirror.ros.task_selection import (  # noqa: E402
    EpisodePicker,
    UnknownTaskError,
    candidate_variations,
    parse_tasks,
)
from mirror_perception.ros.recognized_action import (  # noqa: E402
    RecognitionMessageError,
    RecognizedAction,
)
from mirror_perception.ros.video_window import VideoWindow  # noqa: E402
from sim_bridge.actions import KeyframeAction  # noqa: E402
from sim_bridge.cameras import CAMERA_NAMES, RLBENCH_CAMERAS  # noqa: E402
from sim_bridge.observation import CameraFrame  # noqa: E402
from sim_bridge.ros.errors import MessageError  # noqa: E402
from sim_bridge.ros.instructions import instruction_id  # noqa: E402
from sim_bridge.ros.observation_sync import CameraSet  # noqa: E402
from sim_bridge.ros.status import EpisodeStatus  # noqa: E402

DOMAIN_ID = 217  # distinct from every other test module (200..229 are this stack's)
MAIN_COMMAND_DOMAIN = 216  # part 3: away from part 2's client, whose latched instruction outlives its tests
REPO = Path(__file__).resolve().parents[1]
UNKNOWN_INSTRUCTION = "juggle three oranges"


def push_buttons_vocabulary() -> list[str]:
    from sim_bridge.tasks import make_task

    task = make_task("push_buttons")
    return list(dict.fromkeys(task.descriptions(v)[0] for v in range(task.variation_count())))


# -- part 1: ROS-free pieces -------------------------------------------------------------------------------


def _frame(depth_value: float = 1.0) -> CameraFrame:
    spec = RLBENCH_CAMERAS["front"]
    depth = np.full((128, 128), depth_value, dtype=np.float32)
    return CameraFrame(
        np.zeros((128, 128, 3), np.uint8), depth, np.zeros((128, 128), np.int32), spec.intrinsics(128),
        np.eye(4), spec.near, spec.far,
    )  # fmt: skip


def _camera_set(stamp_ns: int, joints: np.ndarray | None = None) -> CameraSet:
    joints = np.r_[np.zeros(7), 0.04, 0.04] if joints is None else joints
    return CameraSet(stamp_ns, {cam: _frame() for cam in CAMERA_NAMES}, stamp_ns + 1000, joints)


def _status(episode: int, step: int, state: str = "running", busy: bool = False, stamp: float = 10.0):
    return EpisodeStatus(
        "push_buttons", 0, "push the maroon button", 0, episode, step, state, "", busy, stamp
    )


def test_policy_acts_once_per_step_on_a_set_newer_than_the_status():
    acting = ActingState()
    assert not acting.wants_to_act  # no status yet
    assert acting.update_status(_status(1, 0, stamp=10.0))
    assert not acting.accepts(_camera_set(9_999_999_999))  # stamped before the status change
    assert acting.accepts(_camera_set(10_000_000_001))
    acting.mark_acted(KeyframeAction(np.zeros(3), np.array([0, 0, 0, 1.0]), gripper_open=False))
    assert not acting.wants_to_act and acting.gripper_open == 0.0  # acted on (1, 0)
    assert not acting.update_status(_status(1, 0, "executing", busy=True, stamp=10.5))
    assert not acting.wants_to_act
    acting.update_status(_status(1, 1, stamp=12.0))
    assert acting.accepts(_camera_set(12_100_000_000)) and acting.gripper_open == 0.0
    acting.update_status(_status(1, 1, "failure", stamp=13.0))
    assert not acting.wants_to_act  # the episode ended
    assert acting.update_status(_status(2, 0, stamp=14.0))  # a new episode resets everything
    assert acting.wants_to_act and acting.acted is None and acting.gripper_open == 1.0


def test_restarted_policy_reads_the_gripper_from_the_fingers():
    acting = ActingState()
    acting.update_status(_status(4, 3, stamp=20.0))  # first status seen is mid-episode
    assert acting.gripper_open is None and acting.wants_to_act
    closed = observation_from_camera_set(_camera_set(21, np.r_[np.zeros(7), 0.01, 0.01]), None)
    opened = observation_from_camera_set(_camera_set(21, np.r_[np.arange(7.0), 0.04, 0.039]), None)
    assert closed.gripper_open == 0.0 and opened.gripper_open == 1.0
    np.testing.assert_array_equal(opened.joint_positions, np.arange(7.0))
    np.testing.assert_array_equal(opened.gripper_joint_positions, [0.04, 0.039])
    assert observation_from_camera_set(_camera_set(21), 0.0).gripper_open == 0.0  # commanded state wins


def test_unusable_camera_sets_are_rejected_with_a_reason():
    broken = _camera_set(5)
    broken.frames["wrist"] = _frame(depth_value=float("nan"))
    with pytest.raises(MessageError, match="camera 'wrist': 100% of the depth pixels are invalid"):
        observation_from_camera_set(broken, 1.0)
    assert observation_from_camera_set(broken, 1.0, InputLimits(1.0)).cameras["wrist"] is not None
    no_joints = CameraSet(5, {cam: _frame() for cam in CAMERA_NAMES}, 6, None)
    with pytest.raises(MessageError, match="7 arm \\+ 2 finger joint positions"):
        observation_from_camera_set(no_joints, 1.0)
    with pytest.raises(ValueError, match="max_invalid_depth_fraction"):
        InputLimits(1.5)


def test_video_window_slides_and_records_the_whole_demo():
    window = VideoWindow(window=1.0, max_demo_frames=8)
    frame = np.zeros((4, 4, 3), np.uint8)
    second = 1_000_000_000
    for i in range(10):  # 0.0 .. 0.9 s, before the demo
        window.add(i * second // 10, frame + i)
    assert window.add(5 * second // 10, frame).reason == "out of order"  # ignored
    demo = window.start_demo(episode=3, start_ns=7 * second // 10)
    assert demo.stamps == [7 * second // 10, 8 * second // 10, 9 * second // 10]  # seeded from the window
    for i in range(10, 30):  # 1.0 .. 2.9 s
        window.add(i * second // 10, frame + i)
    assert len(window) == 11  # the last second only
    clip, newest = window.live_clip()
    assert clip.shape == (11, 4, 4, 3) and newest == 29 * second // 10 and clip[0, 0, 0, 0] == 19
    window.end_demo(end_ns=3 * second, outcome="success")
    window.add(3 * second, frame + 30)  # in flight when the demo ended: kept
    window.add(31 * second // 10, frame + 31)  # after the end: not part of the demo
    finished = window.take_demo()
    assert window.demo is None and finished.outcome == "success"
    assert len(finished.frames) <= 8 and finished.stride > 1  # 24 frames thinned uniformly
    assert finished.stamps[0] == 7 * second // 10 and finished.stamps[-1] <= 3 * second
    assert np.all(np.diff(finished.stamps) > 0)
    assert finished.clip().shape[1:] == (4, 4, 3)


@pytest.mark.faults
def test_video_window_refuses_future_stamps_and_starts_over_after_a_clock_jump():
    second = 1_000_000_000
    window = VideoWindow(window=1.0, max_future=0.5)
    frame = np.zeros((4, 4, 3), np.uint8)
    now = 100 * second
    assert window.add(now, frame, now_ns=now) is None
    eleven_days = 11 * 24 * 3600 * second
    future = window.add(now + eleven_days, frame + 1, now_ns=now)
    assert (
        future.reason == "future stamp"
        and not future.taken
        and "ahead of this node's clock" in future.message
    )
    # the injected frame never became the reference: the next real frames are taken
    assert window.add(now + second // 10, frame + 2, now_ns=now + second // 10) is None
    window.start_demo(episode=1, start_ns=now)
    # the stream's clock jumps back 50 s (a replayed bag): the window starts over, the demo is dropped
    jump = window.add(50 * second, frame + 3, now_ns=now + second)
    assert jump.reason == "clock jump" and jump.taken
    assert len(window) == 1 and window.demo is None
    assert window.add(50 * second + second // 10, frame + 4) is None
    assert len(window) == 2


def test_episodes_are_drawn_from_the_vocabulary_with_a_seed():
    vocabulary = push_buttons_vocabulary()
    candidates = candidate_variations(vocabulary)
    assert len(candidates) == 50 and {c.task for c in candidates} == {"push_buttons"}
    assert all(c.in_vocabulary and c.instruction in vocabulary for c in candidates)
    picks = [EpisodePicker(candidates, seed=7).next() for _ in range(2)]
    assert picks[0] == picks[1]  # same seed, same episode
    plans = [p for p, _ in zip(iter(EpisodePicker(candidates, 1).next, None), range(20))]
    assert all(p.demo_seed != p.policy_seed for p in plans) and [p.index for p in plans] == list(range(20))
    outside = candidate_variations(vocabulary, ["open_drawer"])
    assert outside and not any(c.in_vocabulary for c in outside)  # named explicitly: run anyway
    # Tasks are drawn evenly, however many variations each has (50 for push_buttons, 3 for open_drawer).
    mixed = EpisodePicker(candidates + outside, seed=3)
    drawn = [mixed.next().target.task for _ in range(400)]
    assert 150 < drawn.count("open_drawer") < 250
    with pytest.raises(UnknownTaskError, match="unknown task 'no_such_task'"):
        candidate_variations(vocabulary, ["no_such_task"])
    with pytest.raises(ValueError, match="no task of the simulator"):
        candidate_variations(["do a backflip"])
    assert parse_tasks(" push_buttons, ,open_drawer ") == ["push_buttons", "open_drawer"]


def test_payloads_round_trip_and_reject_malformed_json():
    recognized = RecognizedAction("push it", 0.25, [("push it", 0.25), ("pull it", 0.1)], True, 40, 12.5, 3)
    assert RecognizedAction.from_json(recognized.to_json()) == recognized
    assert json.loads(recognized.to_json())["top_k"] == [["push it", 0.25], ["pull it", 0.1]]
    bad = json.loads(recognized.to_json()) | {"score": "high"}
    with pytest.raises(RecognitionMessageError, match="'score' must be a finite number"):
        RecognizedAction.from_json(json.dumps(bad))
    info = PolicyActionInfo(2, 1, instruction_id("push it"), True, [0.1] * 9, 80.0, 95.0, 1.5)
    assert PolicyActionInfo.from_json(info.to_json()) == info
    with pytest.raises(MessageError, match="'action' must be 9 numbers"):
        PolicyActionInfo.from_json(info.to_json().replace('"action": [0.1,', '"action": ['))
    state = PolicyState(True, "/ckpt", ["push it"], "", True, 0, 0, 1.0)
    assert PolicyState.from_json(state.to_json()) == state
    with pytest.raises(MessageError, match="lacks"):
        PolicyState.from_json("{}")


def test_summary_counts_recognitions_successes_and_times():
    plans = EpisodePicker(candidate_variations(push_buttons_vocabulary()), 0)
    good = LoopEpisode(plans.next(), "a", recognized="a", outcome="success", inference_ms=[10.0, 30.0],
                         latency_ms=[20.0, 40.0], episode_seconds=4.0, demo_seconds=2.0)  # fmt: skip
    bad = LoopEpisode(plans.next(), "a", recognized="b", outcome="failure", inference_ms=[50.0],
                        latency_ms=[60.0], episode_seconds=8.0, demo_seconds=math.nan)  # fmt: skip
    summary = LoopSummary.of([good, bad])
    assert (summary.recognized, summary.succeeded, summary.actions) == (1, 1, 3)
    assert summary.recognition_accuracy == 0.5 and summary.success_rate == 0.5
    assert summary.mean_inference_ms == pytest.approx(30.0) and summary.mean_latency_ms == pytest.approx(40.0)
    assert summary.mean_episode_seconds == 6.0 and summary.mean_demo_seconds == 2.0  # NaN ignored
    text = "\n".join(summary.lines())
    assert "recognition accuracy: 1/2 = 50.0%" in text and "mean inference time:  30.0 ms" in text
    assert "n/a" in "\n".join(LoopSummary.of([]).lines())


def test_exit_codes_of_killed_children_follow_the_shell_convention():
    assert (exit_code(0), exit_code(130), exit_code(-signal.SIGKILL), exit_code(None)) == (0, 130, 137, 1)


# -- part 2: the stack under bringup ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ros_env(tmp_path_factory):
    """Loopback-only discovery on this module's domain, inherited by every process started here."""
    with environment(
        ROS_DOMAIN_ID=str(DOMAIN_ID),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_LOG_DIR=str(tmp_path_factory.mktemp("ros_log")),
        OMP_WAIT_POLICY="PASSIVE",
    ):
        yield


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny untrained MirrorModel whose vocabulary is push_buttons' instructions."""
    from mirror.model import MirrorModel

    path = tmp_path_factory.mktemp("checkpoint") / "tiny"
    MirrorModel.from_names(instructions=push_buttons_vocabulary()).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def params_file(tmp_path_factory) -> Path:
    """config/sim.yaml with short episodes (max 3 actions)."""
    params = yaml.safe_load((REPO / "config" / "sim.yaml").read_text())
    params["sim_bridge"]["ros__parameters"]["max_steps"] = 3
    path = tmp_path_factory.mktemp("params") / "sim_test.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


class Process:
    """A subprocess whose merged output is collected line by line in the background."""

    def __init__(self, command: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            bufsize=1, start_new_session=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_line(self, pattern: str, timeout: float) -> re.Match:
        regex = re.compile(pattern)
        found: list[re.Match] = []

        def match() -> bool:
            found[:] = [m for m in map(regex.search, list(self.lines)) if m]
            return bool(found) or self.proc.poll() is not None

        wait_for(match, timeout, f"a line matching {pattern!r}")
        assert found, (
            f"process exited ({self.proc.returncode}) before printing {pattern!r}:\n{self.text[-3000:]}"
        )
        return found[0]

    def pids(self) -> dict[str, int]:
        """Node name -> pid, from bringup's 'started <node> (pid N)' lines."""
        return {m[1]: int(m[2]) for m in map(re.compile(r"\[bringup\] started (\w+) \(pid (\d+)\)").search,
                                             self.lines) if m}  # fmt: skip

    def stop(self, signum: int = signal.SIGINT, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(10)
        return self.proc.returncode


def bringup_command(checkpoint: Path, params_file: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mirror.ros.bringup", "--checkpoint", str(checkpoint),
            "--params-file", str(params_file), "--task", "push_buttons", *extra]  # fmt: skip


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead, merely not reaped yet
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def stack(ros_env, checkpoint, params_file):
    process = Process(bringup_command(checkpoint, params_file, "--episodes", "0"))
    yield process
    process.stop(signal.SIGINT)
    for pid in process.pids().values():  # never leave nodes behind, even when a test failed
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)


class Client(SpinningClient):
    """Test-side node: statuses, policy reports, recognitions; instruction and bad-image publishers."""

    statuses: list[EpisodeStatus]

    def __init__(self) -> None:
        from rclpy.parameter_client import AsyncParameterClient
        from sensor_msgs.msg import Image
        from std_msgs.msg import Float64MultiArray, String
        from std_srvs.srv import Trigger

        from mirror.ros.topics import (
            POLICY_ACTIONS_TOPIC,
            POLICY_STATE_TOPIC,
            events_qos,
            latched_history_qos,
        )
        from mirror_common.ros.qos import command_qos, latched_qos, sensor_qos
        from mirror_perception.ros.topics import RECOGNIZED_ACTION_TOPIC, recognition_qos
        from sim_bridge.ros.messages import status_from_message
        from sim_bridge.ros.topics import camera_topic

        super().__init__("stack_test_client", DOMAIN_ID)
        self.states: list[PolicyState] = []
        self.infos: list[PolicyActionInfo] = []
        self.recognitions: list[RecognizedAction] = []
        self.actions: list[object] = []
        node = self.node
        node.create_subscription(
            String,
            "episode_status",
            lambda m: self.statuses.append(status_from_message(m)),
            latched_history_qos(),
        )
        node.create_subscription(
            String,
            POLICY_STATE_TOPIC,
            lambda m: self.states.append(PolicyState.from_json(m.data)),
            latched_qos(),
        )
        node.create_subscription(
            String,
            POLICY_ACTIONS_TOPIC,
            lambda m: self.infos.append(PolicyActionInfo.from_json(m.data)),
            events_qos(),
        )
        node.create_subscription(
            String,
            RECOGNIZED_ACTION_TOPIC,
            lambda m: self.recognitions.append(RecognizedAction.from_json(m.data)),
            recognition_qos(),
        )
        node.create_subscription(Float64MultiArray, "keyframe_action", self.actions.append, command_qos())
        self.instruction = node.create_publisher(String, "instruction", latched_qos())
        self.front = node.create_publisher(Image, camera_topic("front", "image_raw"), sensor_qos())
        self.reset_client = node.create_client(Trigger, "reset_episode")
        self.demo_client = node.create_client(Trigger, "play_demo")
        self.parameters = AsyncParameterClient(node, "sim_bridge")
        self._trigger = Trigger
        self._string = String
        self.start_spinning()

    def call(self, client, timeout: float = 60.0):
        assert client.wait_for_service(timeout_sec=timeout), "service not available"
        future = client.call_async(self._trigger.Request())
        wait_for(future.done, timeout, "a service response")
        return future.result()

    def set_bridge(self, **values) -> None:
        from rclpy.parameter import Parameter

        assert self.parameters.wait_for_services(timeout_sec=60.0)
        future = self.parameters.set_parameters([Parameter(k, value=v) for k, v in values.items()])
        wait_for(future.done, 30, "the parameter change")
        assert all(r.successful for r in future.result().results)

    def reset(self, seed: int) -> EpisodeStatus:
        self.set_bridge(seed=seed)
        before, seen = (self.status.episode if self.statuses else 0), len(self.statuses)
        response = self.call(self.reset_client)
        assert response.success, response.message

        def started() -> EpisodeStatus | None:  # later statuses may already show the policy acting
            return next((s for s in self.statuses[seen:] if s.episode > before), None)

        wait_for(started, 30, "the new episode")
        assert started().state == "running"
        return started()

    def command(self, text: str) -> None:
        self.instruction.publish(self._string(data=text))
        wait_for(lambda: self.states and self.states[-1].instruction_id == instruction_id(text), 30,
                 f"the policy to acknowledge {text!r}")  # fmt: skip

    def wait_action(self, episode: int, timeout: float = 60.0) -> PolicyActionInfo:
        wait_for(
            lambda: any(i.episode == episode for i in self.infos), timeout, f"an action in episode {episode}"
        )
        return next(i for i in self.infos if i.episode == episode)

    def wait_end(self, episode: int, timeout: float = 120.0) -> EpisodeStatus:
        def ended() -> bool:
            return self.status.episode == episode and self.status.state in ("success", "failure", "idle")

        wait_for(ended, timeout, f"episode {episode} to end")
        return self.status


@pytest.fixture(scope="module")
def client(stack):
    c = Client()
    yield c
    c.close()


def test_stack_comes_up_on_stand_by(stack, client):
    wait_for(lambda: client.states and client.states[-1].ready, 180, "the policy to load its checkpoint")
    wait_for(lambda: client.node.count_publishers("recognized_action") > 0, 180, "the perception node")
    wait_for(
        lambda: client.statuses and client.status.state == "running", 60, "the bridge's start-up episode"
    )
    state = client.states[-1]
    assert state.instruction_id == "" and state.vocabulary == push_buttons_vocabulary()
    stack.wait_line(r"\[mirror_loop\] episodes: 0", 30)
    time.sleep(1.5)  # the episode runs and the arm is idle, yet with no instruction nobody acts
    assert not client.infos and not client.actions
    client.set_bridge(max_steps=1)  # one action per episode keeps the following tests short


def test_perception_recognizes_a_demonstration_live_and_finally(stack, client):
    status = client.reset(seed=11)
    response = client.call(client.demo_client)
    assert response.success, response.message
    final = client.wait_end(status.episode, 120)
    assert final.state == "success", final.reason
    wait_for(lambda: any(r.final and r.episode == status.episode for r in client.recognitions), 30,
             "the final recognition")  # fmt: skip
    ours = [r for r in client.recognitions if r.episode == status.episode]
    live, decision = [r for r in ours if not r.final], ours[-1]
    assert live, "no live recognition while the demo played"
    assert decision.final and decision.instruction in push_buttons_vocabulary()
    assert decision.frames >= max(r.frames for r in live)  # the whole demo, not only the window
    assert len(decision.top_k) == 5 and decision.top_k[0] == (decision.instruction, decision.score)
    assert [s for _, s in decision.top_k] == sorted((s for _, s in decision.top_k), reverse=True)
    assert not client.infos  # the policy stayed on stand-by during the demo


def test_policy_acts_on_an_unknown_instruction_with_a_warning(stack, client):
    client.command(UNKNOWN_INSTRUCTION)
    assert client.states[-1].known_instruction is False
    status = client.reset(seed=12)
    info = client.wait_action(status.episode)
    assert (info.step, info.instruction_id, info.known_instruction) == (
        0,
        instruction_id(UNKNOWN_INSTRUCTION),
        False,
    )
    assert len(info.action) == 9 and 0 < info.inference_ms < info.latency_ms
    end = client.wait_end(status.episode)
    assert end.state in ("success", "failure") and end.reason
    assert sum(i.episode == status.episode for i in client.infos) == 1  # once per step
    stack.wait_line(r"\[policy\].*'juggle three oranges' is not in the checkpoint's vocabulary", 10)


@pytest.mark.faults
def test_policy_refuses_a_1_mb_instruction(stack, client):
    """A NUL cannot be tested here: rclpy cuts a string at its first NUL when it serialises it, so senders
    check with check_instruction before publishing (test_ros_messages)."""
    client.command(push_buttons_vocabulary()[0])
    client.instruction.publish(client._string(data="push " * 200_000))
    wait_for(lambda: client.states[-1].instruction_id == "", 30, "the policy to go on stand-by")
    stack.wait_line(
        r"\[policy\].*rejected \(instruction too long, 1 so far\): instruction of \d+ characters refused", 10
    )
    assert all(len(line) < 2000 for line in stack.text.splitlines())  # nothing unbounded reached the log
    client.command(push_buttons_vocabulary()[0])  # and a valid one is followed again


@pytest.mark.faults
def test_policy_survives_malformed_images(stack, client):
    from sensor_msgs.msg import Image

    from sim_bridge.ros.messages import make_header, rgb_to_image

    for _ in range(3):
        header = make_header(client.node.get_clock().now().to_msg(), "front_optical_frame")
        client.front.publish(rgb_to_image(np.zeros((64, 64, 3), np.uint8), header))
        client.front.publish(Image(header=header, height=128, width=128, encoding="mono8", step=128,
                                   data=bytes(128 * 128)))  # fmt: skip
        time.sleep(0.1)
    stack.wait_line(r"\[policy\].*rejected \(malformed.*rgb8 image is 64x64, expected 128x128", 20)
    stack.wait_line(r"\[policy\].*colour image encoding must be rgb8 or bgr8, got 'mono8'", 20)
    stack.wait_line(r"\[perception\].*rejected \(malformed.*front frame.*64x64", 20)
    status = client.reset(seed=13)
    assert client.wait_action(status.episode).episode == status.episode  # still acting
    client.wait_end(status.episode)
    assert stack.proc.poll() is None


@pytest.mark.faults
def test_a_killed_policy_is_respawned_and_acts_again(stack, client):
    wait_for(lambda: client.states and client.states[-1].ready, 180, "the policy to load its checkpoint")
    killed = stack.pids()["policy"]
    os.kill(killed, signal.SIGKILL)
    stack.wait_line(r"\[bringup\] policy exited with code 137", 30)
    stack.wait_line(r"\[bringup\] respawning policy in 2 s \(1/3\)", 10)
    wait_for(lambda: stack.pids()["policy"] != killed, 30, "the policy to be started again")
    wait_for(
        lambda: stack.text.count("policy ready") >= 2, 180, "the respawned policy to load its checkpoint"
    )
    client.command(push_buttons_vocabulary()[0])  # the latched instruction may be the old one: set it
    status = client.reset(seed=14)
    assert client.wait_action(status.episode, timeout=120).episode == status.episode
    client.wait_end(status.episode)


def test_policy_resumes_a_running_episode_after_a_restart(stack, client, checkpoint, params_file):
    client.command("")  # stand-by, so the episode below waits for the restarted policy
    status = client.reset(seed=14)
    pid = stack.pids()["policy"]
    os.kill(pid, signal.SIGINT)
    stack.wait_line(r"\[bringup\] policy exited with code 0", 60)
    client.instruction.publish(client._string(data=push_buttons_vocabulary()[1]))  # latched for the restart
    restarted = Process(
        node_command(node_spec("policy"), params_file, {"checkpoint": str(checkpoint)}), child_environment()
    )
    try:
        info = client.wait_action(status.episode, timeout=180)  # latched status + instruction: it resumes
        assert info.step == 0 and info.instruction_id == instruction_id(push_buttons_vocabulary()[1])
        assert info.known_instruction
        client.wait_end(status.episode)
        assert restarted.proc.poll() is None
    finally:
        assert restarted.stop(signal.SIGINT) == 0, restarted.text[-2000:]
    assert "Traceback" not in restarted.text


def test_sigint_to_bringup_stops_every_node_cleanly(stack):
    pids = stack.pids()
    assert set(pids) == {"sim_bridge", "policy", "perception", "mirror_loop"}
    assert stack.stop(signal.SIGINT) == 0  # --episodes 0: Ctrl-C is the normal end
    wait_for(lambda: not any(process_alive(p) for p in pids.values()), 10, "every node to exit")
    for name in ("sim_bridge", "perception", "mirror_loop"):
        assert re.search(rf"\[bringup\] {name} exited with code 0", stack.text), stack.text[-3000:]
    assert "Traceback" not in stack.text and "terminate called" not in stack.text, stack.text[-3000:]
    assert "[bringup] stack stopped; exit code 0" in stack.text


POLICY_ONLY_DOMAIN = 218


@pytest.mark.parametrize("damage", ["truncated_weights", "missing_directory"])
def test_policy_node_refuses_a_bad_checkpoint_with_one_clear_line(ros_env, checkpoint, tmp_path, damage):
    broken = tmp_path / "broken"
    if damage == "truncated_weights":
        broken.mkdir()
        (broken / "config.json").write_bytes((checkpoint / "config.json").read_bytes())
        (broken / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes()[:1000])
    command = [sys.executable, "-m", "mirror.ros.policy_node", "--ros-args", "-p",
               f"checkpoint:={broken}"]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    expected = "cannot load checkpoint" if damage == "truncated_weights" else "does not exist"
    assert re.search(rf"policy could not start: .*{expected}.*", output), output
    assert "Traceback" not in output


class FakeBridge:
    """This process as the bridge of a real policy node (its own domain): streams camera sets it chooses, with
    the stamps it chooses, and collects the policy's action reports."""

    def __init__(self, checkpoint: Path, params_file: Path, observation) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from std_msgs.msg import String

        from mirror.ros.topics import POLICY_ACTIONS_TOPIC, events_qos
        from mirror_common.ros.qos import latched_qos
        from sim_bridge.ros.camera_publisher import CameraSetPublisher

        env = child_environment() | {"ROS_DOMAIN_ID": str(POLICY_ONLY_DOMAIN)}
        self.policy = Process(
            node_command(node_spec("policy"), params_file, {"checkpoint": str(checkpoint)}), env
        )
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=POLICY_ONLY_DOMAIN)
        self.node = rclpy.create_node("fake_bridge", context=self.context)
        self.infos: list[PolicyActionInfo] = []
        self.node.create_subscription(
            String, POLICY_ACTIONS_TOPIC, lambda m: self.infos.append(PolicyActionInfo.from_json(m.data)),
            events_qos(),
        )  # fmt: skip
        self.full = CameraSetPublisher(self.node, broadcast_tf=False)
        self.no_wrist = CameraSetPublisher(self.node, cameras=CAMERA_NAMES[:3], broadcast_tf=False)
        self.status_pub = self.node.create_publisher(String, "episode_status", latched_qos())
        self.instruction_pub = self.node.create_publisher(String, "instruction", latched_qos())
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.observation = observation

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def start_episode(self, instruction: str) -> None:
        from std_msgs.msg import String

        from sim_bridge.ros.messages import status_to_message

        self.policy.wait_line(r"policy ready", 180)
        self.instruction_pub.publish(String(data=instruction))
        status = EpisodeStatus(
            "push_buttons", 0, instruction, 3, 1, 0, "running", "", False, self.now_ns() * 1e-9
        )
        self.status_pub.publish(status_to_message(status))

    def stream(self, publisher, obs, seconds: float, age: float = 0.0) -> None:
        """Publish ``obs`` for ``seconds``, stamped ``age`` s before now (negative: in the future)."""
        from sim_bridge.ros.messages import ns_to_stamp

        end = time.monotonic() + seconds
        while time.monotonic() < end:
            publisher.publish(obs, ns_to_stamp(self.now_ns() - int(age * 1e9)))
            self.executor.spin_once(timeout_sec=0.1)

    def stream_until(self, node: Process, text: str, publisher, obs, age: float = 0.0) -> None:
        """Stream ``obs`` until ``node`` logs ``text`` (sets sent before discovery completes are lost)."""
        deadline = time.monotonic() + 60
        while text not in node.text and time.monotonic() < deadline:
            self.stream(publisher, obs, 0.3, age)

    def wait_first_action(self) -> PolicyActionInfo:
        deadline = time.monotonic() + 60
        while not self.infos and time.monotonic() < deadline:
            self.stream(self.full, self.observation, 0.5)
        assert self.infos and (self.infos[0].episode, self.infos[0].step) == (1, 0), self.policy.text[-3000:]
        return self.infos[0]

    def close(self) -> int:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
        return self.policy.stop(signal.SIGINT)


def test_policy_alone_skips_missing_cameras_nan_depth_and_stale_sets_then_acts(
    ros_env, checkpoint, params_file, bullet_env
):
    """The policy against a fake bridge (this process) that sends broken camera sets before good ones."""
    import dataclasses

    info, observation = bullet_env.reset("push_buttons", 0, 3)
    wrist = observation.cameras["wrist"]
    nan_wrist = dataclasses.replace(wrist, depth=np.full_like(wrist.depth, np.nan))
    broken = dataclasses.replace(observation, cameras={**observation.cameras, "wrist": nan_wrist})
    bridge = FakeBridge(checkpoint, params_file, observation)
    policy = bridge.policy
    try:
        bridge.start_episode(info.instruction)
        bridge.stream(bridge.no_wrist, observation, 3.5)
        policy.wait_line(r"no usable camera set .*missing: wrist: camera_info, depth, image_raw, pose", 10)
        bridge.stream(bridge.full, broken, 1.0)
        policy.wait_line(r"camera 'wrist': 100% of the depth pixels are invalid", 10)
        bridge.stream(bridge.full, observation, 6.0, age=2.0)  # complete, but two seconds old
        policy.wait_line(
            r"no usable camera set .*stale x\d+, [\d.]+ s ago: set at [\d.]+ is 2\.\d+ s old.*stale [1-9]", 10
        )
        assert not bridge.infos
        bridge.wait_first_action()
    finally:
        code = bridge.close()
    assert code == 0 and "Traceback" not in policy.text, policy.text[-3000:]


@pytest.mark.faults
def test_policy_is_not_blinded_by_a_future_stamped_set_nor_fooled_by_mislabelled_depth(
    ros_env, checkpoint, params_file, bullet_env
):
    """Before: one camera set stamped 11 days ahead made the policy drop every later real set as late (no
    action for the rest of the episode); float depth bytes sent as 16UC1 read as 0.01-65 m, then used."""
    import dataclasses

    info, observation = bullet_env.reset("push_buttons", 0, 3)
    wrist = observation.cameras["wrist"]
    far_wrist = dataclasses.replace(wrist, depth=np.full_like(wrist.depth, 60.0))  # as 16UC1 misreading gives
    mislabelled = dataclasses.replace(observation, cameras={**observation.cameras, "wrist": far_wrist})
    bridge = FakeBridge(checkpoint, params_file, observation)
    policy = bridge.policy
    eleven_days = 11 * 24 * 3600.0
    try:
        bridge.start_episode(info.instruction)
        bridge.stream_until(policy, "rejected (future stamp", bridge.full, observation, age=-eleven_days)
        policy.wait_line(r"rejected \(future stamp, 1 so far\): .*ahead of this node's clock", 10)
        bridge.stream_until(policy, "outside the camera's", bridge.full, mislabelled)
        policy.wait_line(r"rejected \(malformed.*wrist/depth.*outside the camera's", 10)
        assert not bridge.infos
        bridge.wait_first_action()  # the next real sets are used at once
    finally:
        code = bridge.close()
    assert code == 0 and "Traceback" not in policy.text, policy.text[-3000:]


# -- part 3: the main command --------------------------------------------------------------------------------


def main_command_env() -> dict[str, str]:
    return child_environment() | {"ROS_DOMAIN_ID": str(MAIN_COMMAND_DOMAIN)}


def test_mirror_bringup_runs_the_loop_end_to_end(ros_env, checkpoint, params_file, tmp_path):
    # The bridge starts on push_buttons variation 49 and the loop moves it to turn_tap (2 variations): the
    # task and variation must change together (a variation checked against the old task would be refused).
    params = yaml.safe_load(params_file.read_text())
    params["sim_bridge"]["ros__parameters"]["variation"] = 49
    start_high = tmp_path / "start_high.yaml"
    start_high.write_text(yaml.safe_dump(params))
    command = bringup_command(checkpoint, start_high, "--episodes", "1", "--task", "turn_tap")
    run = Process(command, main_command_env())
    try:
        assert run.proc.wait(300) == 0, run.text[-4000:]
    finally:
        run.stop(signal.SIGINT)
    text = run.text
    assert re.search(r"\[mirror_loop\]   demo started", text)
    assert re.search(r"\[mirror_loop\]   final recognition over \d+ frames: '.+' \(score", text), text[-3000:]
    assert re.search(r"\[mirror_loop\]   step 0: action xyz=", text)
    assert re.search(r"\[mirror_loop\]   episode (success|failure): \S", text)
    summary = text[text.index("[mirror_loop] summary over 1 episode(s):") :]
    assert "recognition accuracy:" in summary and "success rate:" in summary
    assert re.search(r"mean inference time:  \d+\.\d ms", summary)
    for name in ("sim_bridge", "policy", "perception", "mirror_loop"):
        assert f"[bringup] {name} exited with code 0" in text
    assert not any(process_alive(p) for p in run.pids().values())
    assert "Traceback" not in text


@pytest.mark.faults
def test_the_stack_runs_on_simulated_time(ros_env, checkpoint, params_file, tmp_path):
    """The bridge publishes /clock (seconds since it started, far from wall time) and every node runs with
    use_sim_time: stamps, ages and windows are judged on the ROS clock, so an episode runs as on wall time."""
    params = yaml.safe_load(params_file.read_text())
    for node in params.values():
        node["ros__parameters"]["use_sim_time"] = True
    params["sim_bridge"]["ros__parameters"]["publish_clock"] = True
    sim_time = tmp_path / "sim_time.yaml"
    sim_time.write_text(yaml.safe_dump(params))
    run = Process(bringup_command(checkpoint, sim_time, "--episodes", "1"), main_command_env())
    try:
        assert run.proc.wait(300) == 0, run.text[-4000:]
    finally:
        run.stop(signal.SIGINT)
    text = run.text
    assert re.search(r"\[mirror_loop\]   final recognition over \d+ frames", text), text[-3000:]
    assert re.search(r"\[mirror_loop\]   step 0: action xyz=", text), text[-3000:]
    assert re.search(r"\[mirror_loop\]   episode (success|failure): \S", text)
    assert "rejected (future stamp" not in text and "stale x" not in text and "Traceback" not in text


@pytest.mark.faults
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGHUP])
def test_no_node_outlives_a_killed_or_hung_up_bringup(ros_env, checkpoint, params_file, signum):
    """SIGKILL: the kernel stops the nodes (they follow bringup's life); SIGHUP (the terminal closed): bringup
    stops the stack cleanly, as on Ctrl-C. Before, both left all four nodes running forever."""
    run = Process(bringup_command(checkpoint, params_file, "--episodes", "0"), main_command_env())
    try:
        wait_for(lambda: len(run.pids()) == 4, 60, "the four nodes to start")
        run.wait_line(r"\[policy\].*policy ready", 180)
        pids = run.pids()
        run.proc.send_signal(signum)
        try:
            wait_for(lambda: not any(process_alive(p) for p in pids.values()), 30, "every node to exit")
        except AssertionError as err:
            alive = [name for name, pid in pids.items() if process_alive(pid)]
            raise AssertionError(f"{err}; still running: {alive}; output:\n{run.text[-3000:]}") from None
        run.proc.wait(30)
    finally:
        run.stop(signal.SIGKILL)
        for pid in run.pids().values():
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
    if signum == signal.SIGHUP:
        assert run.proc.returncode == 0 and "[bringup] received SIGHUP: stopping the stack" in run.text
        assert "[bringup] stack stopped; exit code 0" in run.text and "Traceback" not in run.text


def test_ctrl_c_during_the_loop_exits_130_without_orphans(ros_env, checkpoint, params_file):
    run = Process(bringup_command(checkpoint, params_file, "--episodes", "3"), main_command_env())
    try:
        run.wait_line(r"\[mirror_loop\]   demo started", 240)
    finally:
        code = run.stop(signal.SIGINT)
    assert code == 130, run.text[-3000:]  # mirror_loop was interrupted mid-run
    assert "[mirror_loop] mirror_loop: interrupted" in run.text
    wait_for(lambda: not any(process_alive(p) for p in run.pids().values()), 10, "every node to exit")
    assert "Traceback" not in run.text
