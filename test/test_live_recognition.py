"""Live recognition = offline recognition.

One demonstration recorded with the embedded simulator goes through ``evaluate``'s path (written in RLBench
layout, read back by the held-out reader, recognised by ``evaluate_held_out``) and through the live path (the
bridge's ``sensor_msgs/Image`` conversion, a real rclpy ``perception`` node, its video window and final
decision); both must rank the instructions identically with the same scores. The frames reach the node in
bursts while its executor is not spinning, as when a recognition holds it: the camera subscription must keep
them all. Part 1 tests the ROS-free shared function, :mod:`mirror_perception.demonstration`.

The ROS part runs with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (conftest) on domain :data:`DOMAIN_ID`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ros_test_support import require_module

from mirror.agent import MirrorAgent
from mirror.evaluation.episode_data import EpisodeVideo
from mirror.evaluation.held_out import held_out_from_dataset
from mirror.evaluation.held_out_eval import evaluate_held_out
from mirror.evaluation.recognition import RecognitionRecord
from mirror.model import MirrorModel
from mirror_perception.demonstration import (
    FrameSource,
    demonstration_clip,
    demonstration_clip_indices,
    recognize_demonstration,
)
from mirror_perception.errors import InvalidVideoError
from sim_bridge.scripts.generate_demos import RecordedEpisode, record_episode, save_episode
from sim_bridge.tasks import make_task

DOMAIN_ID = 177  # distinct from every other test module
IMAGE_SIZE = 64  # the cameras render small to keep the file fast; the node is told to expect it
TASK, VARIATION, SEED = "push_buttons", 0, 11  # one of the shortest demos (~80 frames)
BURST = 16  # frames published while the node does not spin: more than the 5 sensor_qos would keep
_NS = 1_000_000_000


def vocabulary() -> list[str]:
    names = [make_task("push_buttons").descriptions(v)[0] for v in range(3)]
    names += [make_task("open_drawer").descriptions(v)[0] for v in range(3)]
    return list(dict.fromkeys(names))


# -- part 1: the shared function, ROS-free ------------------------------------------------------------------


class CountingSource:
    """A lazy video that records which frames were decoded."""

    def __init__(self, video: np.ndarray) -> None:
        self.video = video
        self.taken: list[list[int]] = []

    def __len__(self) -> int:
        return len(self.video)

    def take(self, indices):
        self.taken.append(list(indices))
        return self.video[list(indices)]


def test_every_form_of_a_demonstration_gives_the_same_clip():
    video = np.arange(20, dtype=np.uint8)[:, None, None, None] * np.ones((20, 3, 5, 3), np.uint8)
    expected = demonstration_clip_indices(20, 8)
    assert expected == [0, 3, 5, 8, 10, 13, 15, 18]  # segment middles, by index
    source = CountingSource(video)
    assert isinstance(source, FrameSource)
    for frames in (video, list(video), tuple(video), source):
        clip = demonstration_clip(frames, 8)
        assert clip.shape == (8, 3, 5, 3) and clip.dtype == np.uint8
        assert clip[:, 0, 0, 0].tolist() == expected
    assert source.taken == [expected]  # only the clip's frames are decoded
    assert demonstration_clip(list(video[:3]), 8)[:, 0, 0, 0].tolist() == [0, 1, 2, 2, 2, 2, 2, 2]


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (np.zeros((0, 4, 4, 3), np.uint8), "at least one frame"),
        ([], "at least one frame"),
        (np.zeros((5, 4, 4, 3), np.float32), "uint8"),
        (np.zeros((5, 4, 4), np.uint8), "(T>0, H, W, 3)"),
        ([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)], "differ in shape"),
        ([np.zeros((4, 4, 3), np.uint8), "frame"], "numpy array"),
        ([np.zeros((4, 4), np.uint8)] * 3, "(H, W, 3)"),
        ({"frames": 1}, "FrameSource"),
    ],
)
def test_bad_demonstrations_are_clear_errors(frames, message):
    with pytest.raises(InvalidVideoError, match=message.replace("(", r"\(").replace(")", r"\)")):
        demonstration_clip(frames, 8)


# -- part 2: one demo, offline and live ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo() -> RecordedEpisode:
    from sim_bridge.bullet.env import BulletBackend, BulletConfig

    env = BulletBackend(BulletConfig(image_size=IMAGE_SIZE, cameras=("front",)))
    try:
        return record_episode(env, TASK, VARIATION, SEED)
    finally:
        env.close()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny untrained model: random weights still rank instructions, and another clip scores differently."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("checkpoint") / "tiny"
    model = MirrorModel.from_names(instructions=vocabulary(), arp_overrides={"camera_resolution": IMAGE_SIZE})
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def offline(demo, checkpoint, tmp_path_factory) -> RecognitionRecord:
    """``evaluate``'s recognition of the demo, from the dataset on disk."""
    root = tmp_path_factory.mktemp("demos")
    save_episode(root / TASK / "all_variations" / "episodes" / "episode0", demo)
    agent = MirrorAgent.from_pretrained(checkpoint)
    episodes = held_out_from_dataset(root)
    assert len(episodes) == 1 and len(EpisodeVideo(episodes[0].record, "front")) == len(demo.frames)
    records, _, _ = evaluate_held_out(
        agent, episodes, alignment=False, top_k=len(vocabulary()), progress=False
    )
    return records[0]


def test_the_stored_demo_is_the_recorded_one(demo, offline, checkpoint):
    """What evaluate reads back is bit-identical to what the simulator rendered (PNG is lossless)."""
    video = np.stack([obs.camera("front").rgb for obs in demo.frames])
    agent = MirrorAgent.from_pretrained(checkpoint)
    in_memory = recognize_demonstration(agent.recognizer(), video, top_k=len(vocabulary()))
    assert in_memory == offline.ranked


def test_perception_node_decides_like_evaluate(demo, checkpoint, offline, one_torch_thread):
    require_module("rclpy")
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from mirror.ros.perception_node import PerceptionNode
    from mirror_common.ros.qos import latched_qos, sensor_qos
    from mirror_perception.ros.recognized_action import RecognizedAction
    from mirror_perception.ros.topics import RECOGNIZED_ACTION_TOPIC, recognition_qos
    from sim_bridge.ros.messages import camera_set_messages, ns_to_stamp, status_to_message
    from sim_bridge.ros.status import DEMO, SUCCESS, EpisodeStatus
    from sim_bridge.ros.topics import EPISODE_STATUS_TOPIC, IMAGE_KIND, camera_topic

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    nodes = []
    executor = SingleThreadedExecutor(context=context)
    try:
        node = PerceptionNode(
            context=context,
            parameter_overrides=[
                Parameter("checkpoint", value=str(checkpoint)),
                Parameter("image_size", value=IMAGE_SIZE),
                Parameter("top_k", value=len(vocabulary())),
                Parameter("recognize_period", value=0.2),  # live recognitions run between the bursts
            ],
        )
        nodes.append(node)
        driver = rclpy.create_node("live_recognition_test_driver", context=context)
        nodes.append(driver)
        status_pub = driver.create_publisher(String, EPISODE_STATUS_TOPIC, latched_qos())
        image_pub = driver.create_publisher(Image, camera_topic("front", IMAGE_KIND), sensor_qos())
        received: list[RecognizedAction] = []
        results = driver.create_subscription(
            String, RECOGNIZED_ACTION_TOPIC, lambda m: received.append(RecognizedAction.from_json(m.data)),
            recognition_qos(),
        )  # fmt: skip
        executor.add_node(node)
        executor.add_node(driver)

        def spin_until(predicate, timeout: float, what: str) -> None:
            deadline = time.monotonic() + timeout
            while not predicate():
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
                executor.spin_once(timeout_sec=0.02)

        spin_until(
            lambda: image_pub.get_subscription_count() > 0 and status_pub.get_subscription_count() > 0
            and results.get_publisher_count() > 0,
            30, "the perception node and the driver to match",
        )  # fmt: skip

        def status(state: str, stamp_ns: int) -> String:
            instruction = make_task(TASK).descriptions(VARIATION)[0]
            return status_to_message(
                EpisodeStatus(TASK, VARIATION, instruction, SEED, 1, 0, state, "", True, stamp_ns / _NS)
            )

        start_ns = time.time_ns()
        status_pub.publish(status(DEMO, start_ns))
        spin_until(lambda: node.window.demo is not None, 10, "the demo to start")
        step_ns = 2_000_000  # any increasing stamps after the start that stay behind the clock would do
        for first in range(0, len(demo.frames), BURST):
            burst = demo.frames[first : first + BURST]
            for i, obs in enumerate(burst, start=first):  # the bridge's own message conversion
                stamp = ns_to_stamp(start_ns + (i + 1) * step_ns)
                image_pub.publish(
                    camera_set_messages({"front": obs.camera("front")}, stamp)[("front", IMAGE_KIND)]
                )
            count = first + len(burst)
            spin_until(lambda: len(node.window.demo.frames) == count, 10, f"frames up to {count}")  # noqa: B023
            if first == 0:  # a live recognition holds the executor while the next burst arrives
                spin_until(lambda: received, 10, "a live recognition")
        status_pub.publish(status(SUCCESS, start_ns + (len(demo.frames) + 1) * step_ns))
        spin_until(lambda: any(r.final for r in received), 30, "the final decision")
    finally:
        executor.shutdown()
        for n in nodes:
            n.destroy_node()
        context.try_shutdown()

    final = next(r for r in received if r.final)
    assert final.episode == 1 and final.frames == len(demo.frames)
    assert any(not r.final for r in received)  # live recognitions ran meanwhile
    assert [name for name, _ in final.top_k] == [name for name, _ in offline.ranked]
    assert [score for _, score in final.top_k] == pytest.approx([s for _, s in offline.ranked], abs=1e-6)
    assert final.instruction == offline.predicted

    # The comparison can tell: a recording that lost its first frames decides on another clip.
    video = np.stack([obs.camera("front").rgb for obs in demo.frames])
    agent = MirrorAgent.from_pretrained(checkpoint)
    shifted = agent.recognize(video[5:], top_k=len(vocabulary()))
    assert [s for _, s in shifted] != pytest.approx([s for _, s in final.top_k], abs=1e-6)


def test_perception_node_watches_the_checkpoints_camera_only(checkpoint, one_torch_thread):
    """A video model knows only the viewpoint it was trained on: another camera is refused at start-up."""
    require_module("rclpy")
    import rclpy
    from rclpy.parameter import Parameter

    from mirror.ros.perception_node import PerceptionNode
    from mirror_common.ros.node_runtime import NodeStartupError

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    try:
        with pytest.raises(NodeStartupError, match="trained on 'front' videos"):
            PerceptionNode(
                context=context,
                parameter_overrides=[
                    Parameter("checkpoint", value=str(checkpoint)),
                    Parameter("camera", value="wrist"),
                ],
            )
        node = PerceptionNode(
            context=context, parameter_overrides=[Parameter("checkpoint", value=str(checkpoint))]
        )
        assert node.camera == "front"
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_nodes_take_an_inference_precision_and_coarse_prior_and_refuse_bad_ones(checkpoint, one_torch_thread):
    require_module("rclpy")
    import rclpy
    from rclpy.parameter import Parameter

    from mirror.ros.perception_node import PerceptionNode
    from mirror.ros.policy_node import PolicyNode
    from mirror_common.ros.node_runtime import NodeStartupError

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)

    def start(node_type, precision: str):
        overrides = [Parameter("checkpoint", value=str(checkpoint)), Parameter("precision", value=precision)]
        return node_type(context=context, parameter_overrides=overrides)

    try:
        for node_type in (PerceptionNode, PolicyNode):
            with pytest.raises(NodeStartupError, match="'precision' must be one of"):
                start(node_type, "fp8")
            node = start(node_type, "bf16")
            assert node.agent.precision == "bf16"
            node.destroy_node()
        # the policy's coarse prior (MirrorAgent.coarse_prior): a weight, never negative
        prior = [Parameter("checkpoint", value=str(checkpoint)), Parameter("coarse_prior", value=1.5)]
        node = PolicyNode(context=context, parameter_overrides=prior)
        assert node.agent.coarse_prior == 1.5
        node.destroy_node()
        with pytest.raises(NodeStartupError, match="'coarse_prior' must be >= 0"):
            negative = [*prior[:1], Parameter("coarse_prior", value=-1.0)]
            PolicyNode(context=context, parameter_overrides=negative)
    finally:
        rclpy.shutdown(context=context)


def test_perception_node_reports_a_demonstration_without_frames(checkpoint, one_torch_thread, capfd):
    """A wrong camera topic or a stalled bridge: the demo plays, no frame arrives, and the node says so."""
    require_module("rclpy")
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from std_msgs.msg import String

    from mirror.ros.perception_node import PerceptionNode
    from mirror_common.ros.qos import latched_qos
    from sim_bridge.ros.messages import status_to_message
    from sim_bridge.ros.status import DEMO, EpisodeStatus
    from sim_bridge.ros.topics import EPISODE_STATUS_TOPIC

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    executor = SingleThreadedExecutor(context=context)
    node = driver = None
    try:
        node = PerceptionNode(
            context=context,
            parameter_overrides=[
                Parameter("checkpoint", value=str(checkpoint)),
                Parameter("recognize_period", value=0.1),
                Parameter("frame_timeout", value=0.3),
            ],
        )
        driver = rclpy.create_node("starved_perception_driver", context=context)
        status_pub = driver.create_publisher(String, EPISODE_STATUS_TOPIC, latched_qos())
        instruction = make_task(TASK).descriptions(VARIATION)[0]
        status_pub.publish(
            status_to_message(
                EpisodeStatus(TASK, VARIATION, instruction, SEED, 4, 0, DEMO, "", True, time.time())
            )
        )
        executor.add_node(node)
        executor.add_node(driver)
        seen, deadline = "", time.monotonic() + 10
        while "no usable front frame" not in seen:
            assert time.monotonic() < deadline, f"no warning about the missing frames within 10 s: {seen}"
            executor.spin_once(timeout_sec=0.05)
            seen += capfd.readouterr().err
        assert node.window.demo is not None and node.window.demo.episode == 4
    finally:
        executor.shutdown()
        for n in (node, driver):
            if n is not None:
                n.destroy_node()
        context.try_shutdown()
