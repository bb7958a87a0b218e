"""The bridge's ROS 2 interface: topic, service and frame names (each stream's QoS
is one of :mod:`mirror_common.ros.qos`).

The policy and perception nodes import these names rather than spelling them, so that the interface has one
definition. Names are relative: they resolve inside the node's namespace (``--ros-args -r __ns:=/sim``).

Per camera ``<cam>`` (front, left_shoulder, right_shoulder, wrist), one *camera set* is 16 messages sharing
one ``header.stamp``:

* ``cameras/<cam>/image_raw``   sensor_msgs/Image rgb8 128x128
* ``cameras/<cam>/depth``       sensor_msgs/Image 32FC1, metres (REP 118)
* ``cameras/<cam>/camera_info`` sensor_msgs/CameraInfo, OpenCV convention (positive focal length, plumb_bob)
* ``cameras/<cam>/pose``        geometry_msgs/PoseStamped in ``world``: the OpenCV optical frame's pose,
  i.e. RLBench extrinsics @ diag(-1, -1, 1, 1)

Images and camera info carry ``header.frame_id = <cam>_optical_frame``. ``joint_states``
(sensor_msgs/JointState, 7 arm + 2 finger joints) goes out with the same stamp as each set.
"""

from __future__ import annotations

from sim_bridge.cameras import CAMERA_NAMES

NODE_NAME = "sim_bridge"
WORLD_FRAME = "world"

# Per-camera stream kinds, in the order a set is listed in logs.
IMAGE_KIND = "image_raw"
DEPTH_KIND = "depth"
CAMERA_INFO_KIND = "camera_info"
POSE_KIND = "pose"
CAMERA_KINDS: tuple[str, ...] = (IMAGE_KIND, DEPTH_KIND, CAMERA_INFO_KIND, POSE_KIND)

JOINT_STATES_TOPIC = "joint_states"
KEYFRAME_ACTION_TOPIC = "keyframe_action"  # std_msgs/Float64MultiArray, the 9-float RLBench action
TARGET_POSE_TOPIC = "target_pose"  # geometry_msgs/PoseStamped, published by the action's sender
INSTRUCTION_TOPIC = "instruction"  # std_msgs/String, latched
EPISODE_STATUS_TOPIC = "episode_status"  # std_msgs/String with JSON (sim_bridge.ros.status), latched
ACTION_REJECTED_TOPIC = "keyframe_action_rejected"  # std_msgs/String with JSON (status.ActionRejection)

RESET_EPISODE_SERVICE = "reset_episode"  # std_srvs/Trigger
PLAY_DEMO_SERVICE = "play_demo"  # std_srvs/Trigger; answers once the demo has started
STOP_SERVICE = "stop"  # std_srvs/Trigger

ACTION_LAYOUT_LABEL = "x,y,z,qx,qy,qz,qw,gripper_open,ignore_collisions"

# Parameter names of the bridge node.
PARAM_TASK = "task"
PARAM_VARIATION = "variation"
PARAM_SEED = "seed"
PARAM_BACKEND = "backend"
PARAM_PUBLISH_RATE = "publish_rate"
PARAM_MAX_STEPS = "max_steps"
PARAM_ACTION_TIMEOUT = "action_timeout"

PANDA_JOINT_NAMES: tuple[str, ...] = tuple(f"panda_joint{i}" for i in range(1, 8)) + (
    "panda_finger_joint1",
    "panda_finger_joint2",
)


def camera_topic(camera: str, kind: str) -> str:
    """``cameras/<camera>/<kind>`` for a camera of the rig and one of :data:`CAMERA_KINDS`."""
    if camera not in CAMERA_NAMES:
        raise ValueError(f"unknown camera {camera!r}; the rig has {CAMERA_NAMES}")
    if kind not in CAMERA_KINDS:
        raise ValueError(f"unknown camera stream {kind!r}; expected one of {CAMERA_KINDS}")
    return f"cameras/{camera}/{kind}"


def optical_frame(camera: str) -> str:
    """The ``header.frame_id`` of a camera's images (REP 103 optical frame: x right, y down, z forward)."""
    return f"{camera}_optical_frame"
