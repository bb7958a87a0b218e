"""Names of the perception node's ROS 2 interface (the bridge's names: :mod:`sim_bridge.ros.topics`).

* ``recognized_action``  std_msgs/String JSON (:class:`~mirror_perception.ros.recognized_action.
  RecognizedAction`): while a demonstration plays, the instruction the sliding window of front-camera
  frames most likely shows (``final: false``); when the demo ends, one decision over the whole demo
  (``final: true``).
"""

from __future__ import annotations

from rclpy.qos import QoSProfile

from mirror_common.ros.qos import keep_last_qos

PERCEPTION_NODE_NAME = "perception"
RECOGNIZED_ACTION_TOPIC = "recognized_action"


def recognition_qos() -> QoSProfile:
    """Recognitions: reliable, keep last 20, volatile (they are events; the final one must not be lost)."""
    return keep_last_qos(20)
