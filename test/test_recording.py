"""``mirror_bringup --record``: real rclpy publishers -> :class:`TopicRecorder` (raw CDR) -> MCAP files, read
back and decoded with ``mcap_ros2`` (its decoder, from the schemas in the file), plus the rosbag2-format
message definitions they carry.

Publishers and recorder live in two rclpy contexts of this process (two DDS participants) on domain
:data:`DOMAIN_ID`, loopback discovery only.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ros_test_support import environment, require_module, wait_for  # noqa: E402

require_module("rclpy")
require_module("mcap_ros2")

from mirror.ros.message_definitions import (  # noqa: E402
    SEPARATOR,
    MessageDefinitionError,
    message_definition,
    msg_file,
    type_name_of,
)
from mirror.ros.recording import (  # noqa: E402
    EPISODE_METADATA,
    RESULT_METADATA,
    McapEpisodeWriter,
    TopicRecorder,
    recorded_topics,
)

DOMAIN_ID = 164  # distinct from every other test module
SETS = 6


def test_definitions_expand_every_dependency_once_in_rosbag2_format():
    text = message_definition("sensor_msgs/msg/CameraInfo")
    assert text.startswith(msg_file("sensor_msgs", "CameraInfo").read_text())
    names = re.findall(r"^MSG: (\S+)$", text, flags=re.MULTILINE)
    assert names == ["std_msgs/Header", "builtin_interfaces/Time", "sensor_msgs/RegionOfInterest"]
    assert text.count(f"\n{SEPARATOR}\nMSG: ") == len(names)
    assert message_definition("sensor_msgs/CameraInfo") == text  # short names too
    pose = re.findall(
        r"^MSG: (\S+)$", message_definition("geometry_msgs/msg/PoseStamped"), flags=re.MULTILINE
    )
    assert pose == [
        "std_msgs/Header", "builtin_interfaces/Time", "geometry_msgs/Pose", "geometry_msgs/Point",
        "geometry_msgs/Quaternion",
    ]  # fmt: skip
    for topic in recorded_topics():  # every recorded type is installed and parses
        assert message_definition(type_name_of(topic.message_type))
    with pytest.raises(MessageDefinitionError, match="no_such_msgs/msg/Nothing.msg"):
        message_definition("no_such_msgs/msg/Nothing")
    with pytest.raises(MessageDefinitionError, match="not a message type name"):
        message_definition("Image")


def test_writer_keeps_a_partial_name_until_closed_and_refuses_a_type_change(tmp_path):
    from rclpy.serialization import serialize_message
    from std_msgs.msg import String

    writer = McapEpisodeWriter(tmp_path / "one.mcap", {"task": "x"})
    writer.write("/a", "std_msgs/msg/String", serialize_message(String(data="hi")), 5)
    assert (tmp_path / "one.mcap.part").is_file() and not (tmp_path / "one.mcap").exists()
    with pytest.raises(ValueError, match="carries std_msgs/msg/String"):
        writer.write("/a", "std_msgs/msg/Float64MultiArray", b"", 6)
    assert writer.close() == tmp_path / "one.mcap" and not (tmp_path / "one.mcap.part").exists()

    (message,) = read_messages(tmp_path / "one.mcap")
    assert message.ros_msg.data == "hi" and message.log_time_ns == 5


@dataclass
class Decoded:
    schema: Any
    channel: Any
    log_time_ns: int
    publish_time_ns: int
    ros_msg: Any


def read_messages(path: Path) -> list[Decoded]:
    """Every message of an MCAP file in log-time order, decoded by mcap_ros2 from the file's own schemas."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with path.open("rb") as handle:
        reader = make_reader(handle, decoder_factories=[DecoderFactory()])
        return [
            Decoded(schema, channel, message.log_time, message.publish_time, decoded)
            for schema, channel, message, decoded in reader.iter_decoded_messages(log_time_order=True)
        ]


@pytest.fixture
def ros_domain():
    with environment(ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST"):
        yield


def _status(episode: int, state: str, step: int = 0, reason: str = "") -> str:
    from sim_bridge.ros.status import EpisodeStatus

    return EpisodeStatus(
        "push_buttons", 0, "push the maroon button", 7, episode, step, state, reason
    ).to_json()


def test_episodes_recorded_from_real_publishers_decode_with_mcap_ros2(ros_domain, tmp_path):
    import rclpy
    from mcap.reader import make_reader
    from std_msgs.msg import String

    from mirror_common.ros.qos import command_qos, latched_qos, sensor_qos
    from mirror_perception.ros.topics import RECOGNIZED_ACTION_TOPIC, recognition_qos
    from sim_bridge.cameras import RLBENCH_CAMERAS, look_at_extrinsics
    from sim_bridge.observation import CameraFrame
    from sim_bridge.ros.messages import action_to_message, camera_set_messages, ns_to_stamp
    from sim_bridge.ros.topics import (
        EPISODE_STATUS_TOPIC,
        KEYFRAME_ACTION_TOPIC,
        camera_topic,
    )

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    node = rclpy.create_node("recording_test_publisher", context=context)
    recorder_context = rclpy.Context()
    rclpy.init(context=recorder_context, domain_id=DOMAIN_ID)
    recorder = TopicRecorder(tmp_path, recorder_context)
    try:
        spec = RLBENCH_CAMERAS["front"]
        kinds = ("image_raw", "depth", "camera_info", "pose")
        cameras = {
            k: node.create_publisher(_camera_type(k), camera_topic("front", k), sensor_qos()) for k in kinds
        }
        status_pub = node.create_publisher(String, EPISODE_STATUS_TOPIC, latched_qos())
        action_pub = node.create_publisher(type(action_to_message([0.0] * 6 + [1.0, 1.0, 0.0])),
                                           KEYFRAME_ACTION_TOPIC, command_qos())  # fmt: skip
        recognition_pub = node.create_publisher(String, RECOGNIZED_ACTION_TOPIC, recognition_qos())
        publishers = [*cameras.values(), status_pub, action_pub, recognition_pub]
        wait_for(lambda: all(p.get_subscription_count() > 0 for p in publishers), 30, "the recorder to match")

        status_pub.publish(String(data=_status(3, "running")))  # latched, before the episode starts
        wait_for(lambda: "/episode_status" in recorder._latched, 10, "the latched status")
        first = recorder.start_episode("ep001_push_buttons_v0", {"task": "push_buttons", "variation": 0})

        rng = np.random.default_rng(0)
        frames, actions = [], []
        for i in range(SETS):
            frame = CameraFrame(
                rng.integers(0, 256, (128, 128, 3), dtype=np.uint8),
                rng.uniform(0.5, 2.0, (128, 128)).astype(np.float32), np.zeros((128, 128), np.int32),
                spec.intrinsics(128),
                look_at_extrinsics(np.array(spec.position), np.array(spec.axis)), spec.near, spec.far,
            )  # fmt: skip
            frames.append(frame)
            messages = camera_set_messages({"front": frame}, ns_to_stamp(1_000_000_000 + i))
            for kind in kinds:
                cameras[kind].publish(messages[("front", kind)])
            time.sleep(0.03)
        for step in range(3):
            actions.append([0.1 * step, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, float(step % 2), 0.0])
            action_pub.publish(action_to_message(actions[-1]))
        recognition_pub.publish(String(data=json.dumps({"instruction": "push the maroon button"})))
        status_pub.publish(String(data=_status(3, "failure", 3, "max steps reached")))
        expected = {"/cameras/front/image_raw": SETS, "/keyframe_action": 3, "/episode_status": 2}
        wait_for(lambda: all(recorder.counts().get(t, 0) >= n for t, n in expected.items()), 20,
                 "the recorder to receive everything")  # fmt: skip
        path, counts = recorder.end_episode({"outcome": "failure", "reason": "max steps reached"})
        assert path == first and path.name == "ep001_push_buttons_v0.mcap"
        action_pub.publish(action_to_message(actions[0]))  # between episodes: not recorded anywhere
        time.sleep(0.3)
        second = recorder.start_episode("ep002_push_buttons_v0", {"task": "push_buttons"})
        status_pub.publish(String(data=_status(4, "running")))
        wait_for(lambda: recorder.counts().get("/episode_status", 0) >= 2, 10, "the second episode's status")
        recorder.end_episode()
    finally:
        recorder.close()
        recorder_context.try_shutdown()
        node.destroy_node()
        context.try_shutdown()

    messages = read_messages(path)
    by_topic: dict[str, list] = {}
    for m in messages:
        by_topic.setdefault(m.channel.topic, []).append(m)
    assert {t: len(v) for t, v in by_topic.items()} == counts
    assert counts == {
        "/episode_status": 2, "/cameras/front/image_raw": SETS, "/cameras/front/depth": SETS,
        "/cameras/front/camera_info": SETS, "/cameras/front/pose": SETS, "/keyframe_action": 3,
        "/recognized_action": 1,
    }  # fmt: skip
    assert {t: v[0].schema.name for t, v in by_topic.items()} == {
        "/episode_status": "std_msgs/msg/String", "/recognized_action": "std_msgs/msg/String",
        "/cameras/front/image_raw": "sensor_msgs/msg/Image", "/cameras/front/depth": "sensor_msgs/msg/Image",
        "/cameras/front/camera_info": "sensor_msgs/msg/CameraInfo",
        "/cameras/front/pose": "geometry_msgs/msg/PoseStamped",
        "/keyframe_action": "std_msgs/msg/Float64MultiArray",
    }  # fmt: skip
    statuses = [json.loads(m.ros_msg.data) for m in by_topic["/episode_status"]]
    assert [(s["episode"], s["state"]) for s in statuses] == [(3, "running"), (3, "failure")]  # latched first
    for i, (rgb, depth, info) in enumerate(zip(*(by_topic[f"/cameras/front/{k}"] for k in kinds[:3]))):
        image = rgb.ros_msg
        assert (image.width, image.height, image.encoding, image.header.stamp.nanosec) == (
            128,
            128,
            "rgb8",
            i,
        )
        np.testing.assert_array_equal(
            np.frombuffer(bytes(image.data), np.uint8).reshape(128, 128, 3), frames[i].rgb
        )
        np.testing.assert_array_equal(np.frombuffer(bytes(depth.ros_msg.data), "f4").reshape(128, 128),
                                      frames[i].depth)  # fmt: skip
        assert info.ros_msg.k[0] == pytest.approx(
            -spec.intrinsics(128)[0, 0]
        )  # OpenCV: positive focal length
        assert rgb.log_time_ns >= rgb.publish_time_ns > 0
    recorded_actions = [list(m.ros_msg.data) for m in by_topic["/keyframe_action"]]
    np.testing.assert_allclose(recorded_actions, actions)
    assert by_topic["/keyframe_action"][0].ros_msg.layout.dim[0].size == 9
    with path.open("rb") as handle:
        metadata = {r.name: r.metadata for r in make_reader(handle).iter_metadata()}
    assert metadata == {
        EPISODE_METADATA: {"task": "push_buttons", "variation": "0"},
        RESULT_METADATA: {"outcome": "failure", "reason": "max steps reached"},
    }
    later = [(m.channel.topic, json.loads(m.ros_msg.data)["episode"]) for m in read_messages(second)]
    assert later == [("/episode_status", 3), ("/episode_status", 4)]  # the latched one opens each file
    assert not list(tmp_path.glob("*.part"))


def _camera_type(kind: str) -> type:
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import CameraInfo, Image

    return {"image_raw": Image, "depth": Image, "camera_info": CameraInfo, "pose": PoseStamped}[kind]


# -- the user's command -----------------------------------------------------------------------------------

BRINGUP_DOMAIN = 165


@pytest.mark.slow
def test_mirror_bringup_films_and_records_each_episode(tmp_path):
    """``mirror_bringup --episodes 1 --videos V --record R`` on a tiny untrained model: one GIF and one MCAP
    file for the episode, the MCAP holding every stream of the stack and its outcome."""
    import subprocess
    import sys

    import yaml
    from PIL import Image

    from mirror.model import MirrorModel
    from mirror.ros.launch_config import child_environment
    from sim_bridge.tasks import make_task

    task = make_task("push_buttons")
    checkpoint = tmp_path / "tiny"
    MirrorModel.from_names(
        instructions=list(dict.fromkeys(task.descriptions(v)[0] for v in range(task.variation_count())))
    ).save_pretrained(checkpoint)
    repo = Path(__file__).resolve().parents[1]
    params = yaml.safe_load((repo / "config" / "sim.yaml").read_text())
    params["sim_bridge"]["ros__parameters"]["max_steps"] = 2
    params_file = tmp_path / "sim_test.yaml"
    params_file.write_text(yaml.safe_dump(params))
    videos, records = tmp_path / "videos", tmp_path / "records"
    env = child_environment() | {"ROS_DOMAIN_ID": str(BRINGUP_DOMAIN), "ROS_LOG_DIR": str(tmp_path / "log")}
    command = [sys.executable, "-m", "mirror.ros.bringup", "--checkpoint", str(checkpoint),
               "--params-file", str(params_file), "--task", "push_buttons", "--episodes", "1",
               "--videos", str(videos), "--record", str(records)]  # fmt: skip
    run = subprocess.run(command, env=env, cwd=repo, capture_output=True, text=True, timeout=500)
    text = run.stdout + run.stderr
    assert run.returncode == 0, text[-4000:]
    assert "Traceback" not in text
    (gif,) = videos.iterdir()
    (mcap,) = records.iterdir()
    outcome = re.search(r"\[mirror_loop\]   episode (success|failure): ", text)[1]
    assert re.fullmatch(rf"ep001_push_buttons_v\d+_{outcome}\.gif", gif.name)
    assert mcap.name == gif.name.replace(f"_{outcome}.gif", ".mcap")
    assert f"[mirror_loop]   video: {gif}" in text and f"[mirror_loop]   recording: {mcap} (" in text
    with Image.open(gif) as image:
        assert image.size == (384, 384) and image.n_frames > 10  # a demonstration, then the policy's episode

    messages = read_messages(mcap)
    counts: dict[str, int] = {}
    for m in messages:
        counts[m.channel.topic] = counts.get(m.channel.topic, 0) + 1
    for camera in ("front", "left_shoulder", "right_shoulder", "wrist"):
        for kind in ("image_raw", "depth", "camera_info", "pose"):
            assert counts.get(f"/cameras/{camera}/{kind}", 0) > 20, (camera, kind, counts)
    stack_topics = (
        "/joint_states", "/episode_status", "/recognized_action", "/instruction", "/policy_state",
        "/policy_actions", "/keyframe_action", "/target_pose", "/ground_truth_instruction",
    )  # fmt: skip
    for topic in stack_topics:
        assert counts.get(topic, 0) >= 1, (topic, counts)
    statuses = [json.loads(m.ros_msg.data) for m in messages if m.channel.topic == "/episode_status"]
    assert {"demo", "executing"} <= {s["state"] for s in statuses} and statuses[-1]["state"] == outcome
    assert any(
        json.loads(m.ros_msg.data)["final"] for m in messages if m.channel.topic == "/recognized_action"
    )
    with mcap.open("rb") as handle:
        from mcap.reader import make_reader

        metadata = {r.name: r.metadata for r in make_reader(handle).iter_metadata()}
    assert metadata[EPISODE_METADATA]["task"] == "push_buttons"
    assert metadata[RESULT_METADATA]["outcome"] == outcome
