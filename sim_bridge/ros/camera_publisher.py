"""Publishes one observation as a camera set: 16 messages (4 cameras x rgb/depth/info/pose) plus
``joint_states``, all with one stamp, and, when tf2_ros is importable, the optical frames on ``/tf``."""

from __future__ import annotations

import logging
from typing import Any

from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, Image, JointState

from mirror_common.ros.qos import sensor_qos
from sim_bridge.cameras import CAMERA_NAMES
from sim_bridge.observation import Observation
from sim_bridge.ros.messages import camera_set_messages, joint_state_from_observation, make_header
from sim_bridge.ros.topics import (
    CAMERA_INFO_KIND,
    DEPTH_KIND,
    IMAGE_KIND,
    JOINT_STATES_TOPIC,
    POSE_KIND,
    camera_topic,
    optical_frame,
)

log = logging.getLogger(__name__)


def make_transform_broadcaster(node: Any) -> Any | None:
    """A ``tf2_ros.TransformBroadcaster`` if tf2_ros is installed (it is not on PyPI), else None."""
    try:
        from tf2_ros import TransformBroadcaster
    except ImportError:
        return None
    return TransformBroadcaster(node)


class CameraSetPublisher:
    """The bridge's camera publishers. Call ``publish`` from one thread at a time."""

    def __init__(self, node: Any, cameras: tuple[str, ...] = CAMERA_NAMES, broadcast_tf: bool = True) -> None:
        qos = sensor_qos()
        self.cameras = cameras
        self._publishers: dict[tuple[str, str], Any] = {}
        types = {IMAGE_KIND: Image, DEPTH_KIND: Image, CAMERA_INFO_KIND: CameraInfo, POSE_KIND: PoseStamped}
        for cam in cameras:
            for kind, msg_type in types.items():
                self._publishers[(cam, kind)] = node.create_publisher(msg_type, camera_topic(cam, kind), qos)
        self._joint_states = node.create_publisher(JointState, JOINT_STATES_TOPIC, qos)
        self._tf = make_transform_broadcaster(node) if broadcast_tf else None
        if broadcast_tf and self._tf is None:
            log.info("tf2_ros is not installed: camera poses go out on cameras/<cam>/pose only")

    def publish(self, observation: Observation, stamp: Time) -> None:
        """Publish every camera of the observation with ``stamp`` (KeyError if a camera is missing)."""
        messages = camera_set_messages({cam: observation.camera(cam) for cam in self.cameras}, stamp)
        for key, msg in messages.items():
            self._publishers[key].publish(msg)
        self._joint_states.publish(joint_state_from_observation(observation, make_header(stamp, "")))
        if self._tf is not None:
            self._tf.sendTransform([_transform(cam, messages[(cam, POSE_KIND)]) for cam in self.cameras])


def _transform(camera: str, pose: PoseStamped) -> Any:
    from geometry_msgs.msg import TransformStamped

    msg = TransformStamped(header=pose.header, child_frame_id=optical_frame(camera))
    p = pose.pose.position
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = p.x, p.y, p.z
    msg.transform.rotation = pose.pose.orientation
    return msg
