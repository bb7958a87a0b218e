"""``mirror_bringup --record DIR``: the stack's ROS 2 traffic of each mirror-loop episode in an MCAP file.

One file per episode, ``<DIR>/ep<NNN>_<task>_v<variation>.mcap`` (the ``ros2`` MCAP profile: ``ros2msg``
schemas in rosbag2's format, CDR messages exactly as they travelled, so ``ros2 bag``, Foxglove and
``mcap_ros2.reader`` read it), holding from the episode's start (before the demonstration's reset) to the
end of the policy's episode:

* every camera's ``image_raw``, ``depth``, ``camera_info`` and ``pose`` and ``joint_states``;
* ``keyframe_action``, ``target_pose``, ``policy_actions`` and ``policy_state`` (the policy);
* ``instruction`` (what the loop commands), ``ground_truth_instruction`` (the bridge's), ``episode_status``;
* ``recognized_action`` (perception).

The latched topics' last message before the episode (instruction, status, policy state) opens the file, so
each file stands alone. Metadata records ``mirror_episode`` (task, variation, seeds, demonstrated
instruction) and ``mirror_episode_result`` (recognition, outcome, reason) describe the episode. A file is
written as ``<name>.mcap.part`` and renamed when complete. Messages are logged at their DDS
reception time (ns), their publish time is the sender's; between episodes nothing is written.

:class:`TopicRecorder` subscribes with ``raw=True`` (no deserialisation) on its own node, spun by its own
thread, so a busy loop never makes it drop messages; :class:`McapEpisodeWriter` is the ROS-free writing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mirror.ros.message_definitions import message_definition, type_name_of

MCAP_SUFFIX = ".mcap"
RECORDER_NODE_NAME = "mirror_recorder"
EPISODE_METADATA = "mirror_episode"
RESULT_METADATA = "mirror_episode_result"
CAMERA_QUEUE = 100  # best-effort camera streams: room for a second of sets while the thread is busy


class McapEpisodeWriter:
    """One MCAP file of raw CDR messages (ROS-free): schemas and channels are registered on first use."""

    def __init__(self, path: str | os.PathLike, metadata: Mapping[str, object] | None = None) -> None:
        from mcap.well_known import Profile
        from mcap.writer import CompressionType, Writer

        self.path = Path(path)
        self._partial = self.path.with_name(self.path.name + ".part")
        self._stream = open(self._partial, "wb")  # noqa: SIM115 (closed by close())
        self._writer = Writer(self._stream, compression=CompressionType.ZSTD)
        self._writer.start(profile=Profile.ROS2, library="mirror_policy")
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, tuple[int, str]] = {}
        self._sequence: dict[int, int] = {}
        self.counts: dict[str, int] = {}
        if metadata:
            self.add_metadata(EPISODE_METADATA, metadata)

    def write(
        self, topic: str, type_name: str, data: bytes, log_time_ns: int, publish_time_ns: int = 0
    ) -> None:
        """One message; ``type_name`` is ``pkg/msg/Type``; a topic keeps the type of its first message."""
        from mcap.well_known import MessageEncoding, SchemaEncoding

        channel = self._channels.get(topic)
        if channel is None:
            schema = self._schemas.get(type_name)
            if schema is None:
                definition = message_definition(type_name).encode()
                schema = self._writer.register_schema(type_name, SchemaEncoding.ROS2, definition)
                self._schemas[type_name] = schema
            channel = (self._writer.register_channel(topic, MessageEncoding.CDR, schema), type_name)
            self._channels[topic] = channel
        channel_id, channel_type = channel
        if channel_type != type_name:
            raise ValueError(f"topic {topic} carries {channel_type}, not {type_name}")
        sequence = self._sequence.get(channel_id, 0)
        self._sequence[channel_id] = sequence + 1
        self._writer.add_message(
            channel_id, log_time=log_time_ns, data=bytes(data), publish_time=publish_time_ns or log_time_ns,
            sequence=sequence,
        )  # fmt: skip
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def add_metadata(self, name: str, values: Mapping[str, object]) -> None:
        self._writer.add_metadata(name, {k: str(v) for k, v in values.items()})

    def close(self) -> Path:
        """Finish the file (summary, footer) and give it its final name."""
        self._writer.finish()
        self._stream.close()
        self._partial.replace(self.path)
        return self.path


@dataclass(frozen=True)
class RecordedTopic:
    name: str  # relative: resolved in the recorder's namespace
    message_type: type
    qos: Callable[[], Any]
    latched: bool = False


def recorded_topics() -> list[RecordedTopic]:
    """What a recording holds, with the QoS each stream's own subscribers use (they match its publisher)."""
    from functools import partial

    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import CameraInfo, Image, JointState
    from std_msgs.msg import Float64MultiArray, String

    from mirror.ros.launch_config import GROUND_TRUTH_INSTRUCTION_TOPIC
    from mirror.ros.topics import POLICY_ACTIONS_TOPIC, POLICY_STATE_TOPIC, events_qos
    from mirror_common.ros.qos import command_qos, keep_last_qos, latched_qos
    from mirror_perception.ros.topics import RECOGNIZED_ACTION_TOPIC, recognition_qos
    from sim_bridge.cameras import CAMERA_NAMES
    from sim_bridge.ros.topics import (
        CAMERA_INFO_KIND,
        DEPTH_KIND,
        EPISODE_STATUS_TOPIC,
        IMAGE_KIND,
        INSTRUCTION_TOPIC,
        JOINT_STATES_TOPIC,
        KEYFRAME_ACTION_TOPIC,
        POSE_KIND,
        TARGET_POSE_TOPIC,
        camera_topic,
    )

    sensor = partial(keep_last_qos, CAMERA_QUEUE, reliable=False)
    kinds = {IMAGE_KIND: Image, DEPTH_KIND: Image, CAMERA_INFO_KIND: CameraInfo, POSE_KIND: PoseStamped}
    topics = [RecordedTopic(camera_topic(c, k), t, sensor) for c in CAMERA_NAMES for k, t in kinds.items()]
    topics += [
        RecordedTopic(JOINT_STATES_TOPIC, JointState, sensor),
        RecordedTopic(KEYFRAME_ACTION_TOPIC, Float64MultiArray, command_qos),
        RecordedTopic(TARGET_POSE_TOPIC, PoseStamped, command_qos),
        RecordedTopic(POLICY_ACTIONS_TOPIC, String, events_qos),
        RecordedTopic(POLICY_STATE_TOPIC, String, latched_qos, latched=True),
        RecordedTopic(INSTRUCTION_TOPIC, String, latched_qos, latched=True),
        RecordedTopic(GROUND_TRUTH_INSTRUCTION_TOPIC, String, latched_qos, latched=True),
        RecordedTopic(EPISODE_STATUS_TOPIC, String, partial(keep_last_qos, 50, latched=True), latched=True),
        RecordedTopic(RECOGNIZED_ACTION_TOPIC, String, recognition_qos),
    ]
    return topics


class TopicRecorder:
    """Records ``topics`` into one :class:`McapEpisodeWriter` per episode (see the module docstring).

    Its node ignores the process's global ``--ros-args`` (``-r __node:=mirror_loop`` would rename it) and
    lives in ``namespace``; a daemon thread spins it until :meth:`close`.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        context: Any = None,
        namespace: str = "",
        topics: Sequence[RecordedTopic] | None = None,
    ) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.directory = Path(directory)
        self.node = rclpy.create_node(
            RECORDER_NODE_NAME, context=context, namespace=namespace or None, use_global_arguments=False,
            start_parameter_services=False,
        )  # fmt: skip
        self._lock = threading.Lock()
        self._writer: McapEpisodeWriter | None = None
        self._latched: dict[str, tuple[str, bytes, int, int]] = {}
        self.failed = ""  # why the current file stopped being written, if it did
        for topic in topics if topics is not None else recorded_topics():
            name = self.node.resolve_topic_name(topic.name)

            def callback(data: bytes, info: Any, name: str = name, topic: RecordedTopic = topic) -> None:
                self._on_message(name, type_name_of(topic.message_type), data, info, topic.latched)

            self.node.create_subscription(topic.message_type, topic.name, callback, topic.qos(), raw=True)
        self._executor = SingleThreadedExecutor(context=self.node.context)
        self._executor.add_node(self.node)
        self._running = True
        self._thread = threading.Thread(target=self._spin, name="mcap-recorder", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self._running:
            self._executor.spin_once(timeout_sec=0.05)

    def _on_message(self, topic: str, type_name: str, data: bytes, info: Any, latched: bool) -> None:
        received = info.get("received_timestamp") or self.node.get_clock().now().nanoseconds
        sent = info.get("source_timestamp") or received
        with self._lock:
            if latched:
                self._latched[topic] = (type_name, data, received, sent)
            if self._writer is None or self.failed:
                return
            try:
                self._writer.write(topic, type_name, data, received, sent)
            except (OSError, LookupError, ValueError) as err:  # full disk, missing .msg: stop, say why
                self.node.get_logger().error(f"recording {self._writer.path} stopped: {err}")
                self.failed = f"{topic}: {err}"

    @property
    def recording(self) -> bool:
        return self._writer is not None

    def counts(self) -> dict[str, int]:
        """Messages per topic in the open file so far (empty when none is open)."""
        with self._lock:
            return dict(self._writer.counts) if self._writer is not None else {}

    def start_episode(self, stem: str, metadata: Mapping[str, object]) -> Path:
        """Open ``<directory>/<stem>.mcap`` (closing any open file first); it starts with the latched
        topics' last messages."""
        path = self.directory / f"{stem}{MCAP_SUFFIX}"
        with self._lock:
            if self._writer is not None:
                self._writer.close()
            self.failed = ""
            self._writer = McapEpisodeWriter(path, metadata)
            for topic, (type_name, data, received, sent) in self._latched.items():
                self._writer.write(topic, type_name, data, received, sent)
        return path

    def end_episode(self, result: Mapping[str, object] | None = None) -> tuple[Path, dict[str, int]] | None:
        """Close the open file with the ``mirror_episode_result`` metadata; (path, messages per topic), or
        None when no file was open. A file that stopped early (:attr:`failed`) is closed with what it has;
        OSError if even that fails."""
        with self._lock:
            writer, self._writer = self._writer, None
            if writer is None:
                return None
            if result:
                writer.add_metadata(RESULT_METADATA, result)
            return writer.close(), dict(writer.counts)

    def close(self) -> None:
        """Stop the thread, close an open file (as it is) and destroy the node."""
        self._running = False
        self._thread.join(5.0)
        try:
            self.end_episode()
        except OSError as err:
            self.node.get_logger().error(f"closing the recording failed: {err}")
        self._executor.shutdown()
        self.node.destroy_node()
