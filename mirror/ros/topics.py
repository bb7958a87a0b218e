"""Names of the policy and mirror-loop ROS 2 interface (the bridge's own names: :mod:`sim_bridge.ros.topics`).

* ``policy_state``   std_msgs/String JSON (:class:`~mirror.ros.policy_messages.PolicyState`), latched:
  readiness, the model's vocabulary and the instruction the policy is following (its acknowledgement).
* ``policy_actions`` std_msgs/String JSON (:class:`~mirror.ros.policy_messages.PolicyActionInfo`),
  one per keyframe action published: timings and the action, for the loop's report and the bench.

An empty string on ``instruction`` is the *stand-by* command: the policy acts on nothing until a non-empty
instruction arrives (the mirror loop sends it while a demonstration plays).
"""

from __future__ import annotations

from rclpy.qos import QoSProfile

from mirror_common.ros.qos import keep_last_qos

POLICY_NODE_NAME = "policy"
MIRROR_LOOP_NODE_NAME = "mirror_loop"

POLICY_STATE_TOPIC = "policy_state"
POLICY_ACTIONS_TOPIC = "policy_actions"
STANDBY_INSTRUCTION = ""

PARAM_CHECKPOINT = "checkpoint"
PARAM_DEVICE = "device"
PARAM_THREADS = "threads"
PARAM_PRECISION = "precision"
PARAM_COARSE_PRIOR = "coarse_prior"


def events_qos() -> QoSProfile:
    """Per-action reports: reliable, keep last 50, volatile (subscribers that start late miss old ones)."""
    return keep_last_qos(50)


def latched_history_qos(depth: int = 50) -> QoSProfile:
    """Subscribing to a latched topic (``episode_status``) without losing quick successive messages: the
    publisher keeps the last one for late joiners; this reader queues up to ``depth`` until they are taken."""
    return keep_last_qos(depth, latched=True)
