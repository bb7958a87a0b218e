"""``perception`` ROS 2 node: recognises which instruction a demonstration shows (the ViCLIP half of Mirror).

Keeps a sliding window of ``cameras/<camera>/image_raw`` frames (``window`` seconds of stream time). While the
bridge plays a demonstration (``episode_status`` state ``demo``) it runs ``MirrorAgent.recognize`` every
``recognize_period`` seconds on the window's demo frames (uniformly sampled to the model's clip length) and
publishes ``recognized_action`` with ``final: false``; when the demo ends (success, failure or stop) it waits
``final_grace`` seconds for the last frames in flight, then decides over every frame of the demonstration and
publishes ``final: true``. Payload: :class:`~mirror_perception.ros.recognized_action.RecognizedAction`.

The final decision is :func:`mirror_perception.demonstration.recognize_demonstration` over the recorded
frames, the function ``evaluate`` runs on a stored demo: the bridge streams one frame per control tick, as
``generate_demos`` stores them, and the clip is picked by frame index. So every frame must arrive: the camera
subscription keeps :data:`FRAME_QUEUE_DEPTH` frames (best effort, like the stream) while the executor is busy
with a recognition, and the model is warmed up before subscribing so the first one is not slow.

    perception_node --ros-args -p checkpoint:=checkpoints/mirror_cpu_small -p window:=4.0

Frames of the wrong size or encoding are logged at a limited rate and dropped; a demonstration that brings no
usable frame for ``frame_timeout`` seconds is reported (a wrong topic or a stalled bridge), also rate-limited.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image
from std_msgs.msg import String

from mirror.ros.agent_loading import load_agent
from mirror.ros.parameters import PERCEPTION_PARAMETERS
from mirror.ros.topics import PARAM_CHECKPOINT, PARAM_DEVICE, PARAM_PRECISION, PARAM_THREADS
from mirror_common.cli import console_main
from mirror_common.reasons import ReasonLog
from mirror_common.ros.node_runtime import NodeStartupError, run_node
from mirror_common.ros.qos import keep_last_qos, latched_qos
from mirror_perception.demonstration import Frames
from mirror_perception.ros.recognized_action import RecognizedAction
from mirror_perception.ros.topics import PERCEPTION_NODE_NAME, RECOGNIZED_ACTION_TOPIC, recognition_qos
from mirror_perception.ros.video_window import DemoRecording, VideoWindow
from sim_bridge.ros.errors import MessageError
from sim_bridge.ros.messages import image_to_rgb, read_status, stamp_to_ns
from sim_bridge.ros.status import DEMO, EpisodeStatus
from sim_bridge.ros.topics import EPISODE_STATUS_TOPIC, IMAGE_KIND, camera_topic

LOG_PERIOD = 5.0
_NS = 1_000_000_000
# Frames the camera subscription holds while a callback runs. ``sensor_qos``'s 5 lost frames whenever a
# recognition (or a CPU shared with the simulator) stalled the executor for more than ~5 ticks, and a demo
# missing frames is sampled at other phases than the stored one. 100 ticks = 5 s at 20 Hz, ~5 MB at 128x128.
FRAME_QUEUE_DEPTH = 100


def frame_queue_qos() -> QoSProfile:
    """The camera subscription: best effort like the bridge's stream, keeping FRAME_QUEUE_DEPTH frames."""
    return keep_last_qos(FRAME_QUEUE_DEPTH, reliable=False)


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise NodeStartupError(f"parameter {name} must be positive, got {value}")
    return value


def _video_camera(requested: str, trained: str, checkpoint: str) -> str:
    """The camera to watch: the one the checkpoint's video model was trained on. ``requested`` may only
    confirm it: a model trained on one viewpoint recognises another no better than chance."""
    if requested and requested != trained:
        raise NodeStartupError(
            f"parameter camera is {requested!r} but {checkpoint} was trained on {trained!r} videos; "
            "leave camera empty to watch the checkpoint's camera"
        )
    return trained


class PerceptionNode(Node):
    """See the module docstring. Raises :class:`NodeStartupError` for a bad checkpoint or parameter."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(PERCEPTION_NODE_NAME, **kwargs)
        for name, default in PERCEPTION_PARAMETERS.items():
            self.declare_parameter(name, default)
        p = {name: self.get_parameter(name).value for name in PERCEPTION_PARAMETERS}
        try:
            self.period = _positive("recognize_period", float(p["recognize_period"]))
            self.grace = float(p["final_grace"])
            self.top_k = int(_positive("top_k", int(p["top_k"])))
            self.min_frames = int(_positive("min_frames", int(p["min_frames"])))
            self.frame_timeout = _positive("frame_timeout", float(p["frame_timeout"]))
            size = int(p["image_size"])
            self.image_shape = (size, size) if size > 0 else None
            try:
                self.window = VideoWindow(_positive("window", float(p["window"])), int(p["max_demo_frames"]))
            except ValueError as err:
                raise NodeStartupError(str(err)) from err
            self.agent, self.checkpoint = load_agent(
                p[PARAM_CHECKPOINT], p[PARAM_DEVICE], int(p[PARAM_THREADS]), p[PARAM_PRECISION]
            )
            self.camera = _video_camera(p["camera"], self.agent.config.camera_for_video, self.checkpoint)
            self._warm_up()
        except NodeStartupError:
            super().destroy_node()
            raise
        self.rejections = ReasonLog(logging.getLogger("perception"), LOG_PERIOD)  # frames refused, by reason
        self._finalize_at: float | None = None  # monotonic deadline of the pending final decision
        self._last_frame_at = time.monotonic()  # of the last frame accepted (or of the demo's start)

        # Publisher last: its appearance on the graph tells clients the model is loaded.
        self.create_subscription(
            Image, camera_topic(self.camera, IMAGE_KIND), self._on_image, frame_queue_qos()
        )
        self.create_subscription(String, EPISODE_STATUS_TOPIC, self._on_status, latched_qos())
        self.create_timer(self.period, self._recognize_live)
        self.create_timer(0.05, self._finalize_if_due)
        self._pub = self.create_publisher(String, RECOGNIZED_ACTION_TOPIC, recognition_qos())
        self.get_logger().info(
            f"perception ready: {self.checkpoint} ({len(self.agent.config.instructions)} instructions); "
            f"window {p['window']:g} s of {camera_topic(self.camera, IMAGE_KIND)}, recognising every "
            f"{self.period:g} s during demonstrations"
        )

    def _warm_up(self) -> None:
        """Embed the vocabulary and run one clip now: done lazily, the first demo's first recognition also
        paid for both (~1.5x a later one here), holding the executor while frames arrived."""
        size = self.agent.model.viclip.config.input_size
        height, width = self.image_shape or (size, size)
        try:
            self.agent.recognize(np.zeros((1, height, width, 3), np.uint8), top_k=1)
        except ValueError as err:  # InvalidVideoError: the model cannot take this camera's frames
            raise NodeStartupError(f"the model cannot recognise {height}x{width} frames: {err}") from err

    # -- inputs --------------------------------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        try:
            rgb = image_to_rgb(msg, self.image_shape)
        except MessageError as err:
            self.rejections.record("malformed", f"{self.camera} frame: {err}")
            return
        now = self.get_clock().now().nanoseconds  # 0 under use_sim_time until /clock arrives: not judged
        note = self.window.add(stamp_to_ns(msg.header.stamp), rgb, now or None)
        if note is not None:
            self.rejections.record(note.reason, f"{self.camera} frame: {note.message}")
        else:
            self._last_frame_at = time.monotonic()

    def _on_status(self, msg: String) -> None:
        status = read_status(self, msg, LOG_PERIOD)
        if status is None:
            return
        stamp_ns = int(round(status.stamp * _NS))
        demo = self.window.demo
        if status.state == DEMO:
            if demo is not None and demo.episode != status.episode:
                self._finalize()  # a demo whose end we never saw
            if self.window.demo is None:
                self._start(status, stamp_ns)
        elif demo is not None and demo.end_ns is None:
            if status.episode == demo.episode:
                self.window.end_demo(stamp_ns, status.state)
                self._finalize_at = time.monotonic() + self.grace
            else:
                self.window.end_demo(stamp_ns, f"superseded by episode {status.episode}")
                self._finalize()

    def _start(self, status: EpisodeStatus, stamp_ns: int) -> None:
        self.window.start_demo(status.episode, stamp_ns)
        self._finalize_at = None
        self._last_frame_at = time.monotonic()
        self.get_logger().info(
            f"demonstration of episode {status.episode} started ({status.task} variation {status.variation})"
        )

    # -- recognition ---------------------------------------------------------------------------------------
    def _recognize_live(self) -> None:
        demo = self.window.demo
        if demo is None or demo.end_ns is not None:
            return
        silent = time.monotonic() - self._last_frame_at
        if silent > self.frame_timeout:  # a wrong camera topic or a stalled bridge would otherwise be silent
            self.get_logger().warning(
                f"no usable {self.camera} frame for {silent:.1f} s during the demonstration of episode "
                f"{demo.episode}: is {camera_topic(self.camera, IMAGE_KIND)} published?",
                throttle_duration_sec=LOG_PERIOD,
            )
        live = self.window.live_clip()
        if live is None or live[0].shape[0] < self.min_frames:
            return
        frames, newest = live
        self._publish(demo, frames, newest, final=False)

    def _finalize_if_due(self) -> None:
        if self._finalize_at is not None and time.monotonic() >= self._finalize_at:
            self._finalize()

    def _finalize(self) -> None:
        self._finalize_at = None
        demo = self.window.take_demo()
        if demo is None:
            return
        if not demo.frames:
            self.get_logger().error(
                f"demonstration of episode {demo.episode} ended ({demo.outcome}) without a single "
                f"{self.camera} frame: no decision possible"
            )
            self._pub.publish(
                String(data=RecognizedAction("", 0.0, [], True, 0, 0.0, demo.episode).to_json())
            )
            return
        self._publish(demo, demo.frames, demo.stamps[-1], final=True)

    def _publish(self, demo: DemoRecording, frames: Frames, newest_ns: int, final: bool) -> None:
        started = time.perf_counter()
        try:
            ranked = self.agent.recognize(frames, top_k=self.top_k)
        except ValueError as err:  # InvalidVideoError: frames the model cannot take
            self.get_logger().warning(f"recognition failed: {err}", throttle_duration_sec=LOG_PERIOD)
            return
        elapsed_ms = (time.perf_counter() - started) * 1e3
        best, score = ranked[0]
        result = RecognizedAction(
            best, float(score), [(n, float(s)) for n, s in ranked], final, len(frames),
            newest_ns / _NS, demo.episode,
        )  # fmt: skip
        self._pub.publish(String(data=result.to_json()))
        kind = "final decision" if final else "live"
        self.get_logger().info(
            f"episode {demo.episode} {kind}: {best!r} (score {score:.3f}, {len(frames)} frames, "
            f"{elapsed_ms:.0f} ms)"
        )


@console_main
def main(args: list[str] | None = None) -> int:
    return run_node(PerceptionNode, PERCEPTION_NODE_NAME, args)


if __name__ == "__main__":
    sys.exit(main())
