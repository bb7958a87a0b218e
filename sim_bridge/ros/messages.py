"""numpy <-> ROS 2 message conversion for the bridge's streams, validating everything that comes in.

Image ``data`` is filled from one bytes buffer and read back with ``np.frombuffer`` (rclpy's per-element
setter path costs milliseconds per image). Every ``*_from_message`` / ``image_to_*`` function raises
:class:`MessageError` on a malformed message rather than returning garbage.

Conventions (see :mod:`sim_bridge.cameras`): our frames hold RLBench intrinsics (negative focal length) and
RLBench extrinsics (camera x left, y up). On the wire we use ROS conventions: CameraInfo ``K``/``P`` with
positive focal length for the REP 103 optical frame (x right, y down, z forward), and the pose of that optical
frame, ``E_cv = E_rlbench @ diag(-1, -1, 1, 1)``. Depth is 32FC1 metres (REP 118); on input, NaN, infinities
and non-positive values (and 0 in 16UC1 millimetres) mean "no measurement" and become NaN, so point clouds
carry NaN points there, which every bounds crop drops (NaN fails all comparisons).
"""

from __future__ import annotations

import array
import math
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray, Header, MultiArrayDimension, String

from sim_bridge.actions import ACTION_SIZE, QUATERNION_NORM_TOLERANCE, KeyframeAction
from sim_bridge.cameras import RLBENCH_FROM_CV
from sim_bridge.observation import CameraFrame, Observation
from sim_bridge.ros.errors import MessageError
from sim_bridge.ros.status import EpisodeStatus
from sim_bridge.ros.topics import (
    ACTION_LAYOUT_LABEL,
    CAMERA_INFO_KIND,
    DEPTH_KIND,
    IMAGE_KIND,
    PANDA_JOINT_NAMES,
    POSE_KIND,
    WORLD_FRAME,
    optical_frame,
)

_BIG_ENDIAN_HOST = sys.byteorder == "big"
_RGB_CHANNEL_ORDER = {"rgb8": (0, 1, 2), "bgr8": (2, 1, 0)}
_NS = 1_000_000_000

__all__ = [
    "MessageError",
    "action_from_message",
    "action_to_message",
    "action_vector_from_message",
    "camera_info_from_intrinsics",
    "camera_pose_from_extrinsics",
    "camera_set_messages",
    "depth_to_image",
    "extrinsics_from_camera_pose",
    "image_to_depth",
    "image_to_rgb",
    "intrinsics_from_camera_info",
    "joint_state_from_observation",
    "make_header",
    "matrix_from_pose",
    "ns_to_stamp",
    "pose_from_matrix",
    "quaternion_from_rotation",
    "rotation_from_quaternion",
    "rgb_to_image",
    "stamp_to_ns",
    "target_pose_message",
    "status_from_message",
    "status_to_message",
]


# -- stamps and headers ----------------------------------------------------------------------------------


def stamp_to_ns(stamp: Time) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds (exact, usable as a dictionary key)."""
    return int(stamp.sec) * _NS + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    sec, nanosec = divmod(int(ns), _NS)
    return Time(sec=sec, nanosec=nanosec)


def make_header(stamp: Time, frame_id: str) -> Header:
    return Header(stamp=stamp, frame_id=frame_id)


def _bytes_array(values: np.ndarray) -> array.array:
    """One copy from a contiguous numpy array into the ``array('B')`` rclpy stores in ``data``."""
    out = array.array("B")
    out.frombytes(memoryview(np.ascontiguousarray(values)).cast("B"))
    return out


# -- images ------------------------------------------------------------------------------------------------


def rgb_to_image(rgb: np.ndarray, header: Header) -> Image:
    """(H, W, 3) uint8 -> ``sensor_msgs/Image`` rgb8."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"RGB image must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    msg = Image(header=header, height=h, width=w, encoding="rgb8", is_bigendian=0, step=3 * w)
    msg.data = _bytes_array(rgb)
    return msg


def depth_to_image(depth: np.ndarray, header: Header) -> Image:
    """(H, W) metric depth -> ``sensor_msgs/Image`` 32FC1 in the host's byte order (REP 118)."""
    depth = np.asarray(depth)
    if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f"depth must be (H, W) float, got {depth.shape} {depth.dtype}")
    h, w = depth.shape
    msg = Image(
        header=header, height=h, width=w, encoding="32FC1", is_bigendian=int(_BIG_ENDIAN_HOST), step=4 * w
    )
    msg.data = _bytes_array(depth.astype(np.float32, copy=False))
    return msg


def _image_rows(msg: Image, bytes_per_pixel: int, shape: tuple[int, int] | None) -> np.ndarray:
    """Validated (H, W * bytes_per_pixel) uint8 view of an image's pixel bytes, row padding removed."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise MessageError(f"{msg.encoding} image has size {w}x{h}")
    if shape is not None and (h, w) != tuple(shape):
        raise MessageError(f"{msg.encoding} image is {w}x{h}, expected {shape[1]}x{shape[0]}")
    row = w * bytes_per_pixel
    if step < row:
        raise MessageError(
            f"{msg.encoding} image step {step} is shorter than a row ({w} x {bytes_per_pixel} B)"
        )
    if step - row >= row:  # ROS allows row padding, never as wide as the row itself
        raise MessageError(
            f"{msg.encoding} image step {step} is at least twice a row ({w} x {bytes_per_pixel} B): the "
            "bytes do not match the encoding"
        )
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != step * h:
        raise MessageError(
            f"{msg.encoding} image data holds {data.size} bytes, expected step x height = {step * h}"
        )
    return data.reshape(h, step)[:, :row]


def image_to_rgb(msg: Image, shape: tuple[int, int] | None = None) -> np.ndarray:
    """``sensor_msgs/Image`` rgb8 or bgr8 -> (H, W, 3) uint8 RGB; ``shape`` = expected (H, W) if given."""
    order = _RGB_CHANNEL_ORDER.get(msg.encoding)
    if order is None:
        raise MessageError(f"colour image encoding must be rgb8 or bgr8, got {msg.encoding!r}")
    rows = _image_rows(msg, 3, shape)
    pixels = rows.reshape(rows.shape[0], -1, 3)
    return np.ascontiguousarray(pixels[..., list(order)] if order != (0, 1, 2) else pixels)


def image_to_depth(msg: Image, shape: tuple[int, int] | None = None) -> np.ndarray:
    """``sensor_msgs/Image`` 32FC1 (metres) or 16UC1 (millimetres) -> (H, W) float32 metres, invalid = NaN."""
    if msg.encoding == "32FC1":
        dtype = np.dtype(">f4" if msg.is_bigendian else "<f4")
        depth = _image_rows(msg, 4, shape).copy().view(dtype).astype(np.float32)
    elif msg.encoding in ("16UC1", "mono16"):
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
        depth = _image_rows(msg, 2, shape).copy().view(dtype).astype(np.float32) / 1000.0
    else:
        raise MessageError(f"depth image encoding must be 32FC1 (metres) or 16UC1 (mm), got {msg.encoding!r}")
    invalid = ~np.isfinite(depth) | (depth <= 0.0)
    if invalid.any():
        depth[invalid] = np.nan
    return depth


# -- calibration -------------------------------------------------------------------------------------------


def camera_info_from_intrinsics(
    intrinsics: np.ndarray, width: int, height: int, header: Header
) -> CameraInfo:
    """RLBench intrinsics (negative focal length) -> ``CameraInfo`` for the optical frame (positive f).

    Flipping the camera's x and y axes (RLBench -> OpenCV) flips the signs of fx and fy and keeps the centre.
    """
    k = np.asarray(intrinsics, dtype=np.float64)
    if k.shape != (3, 3) or not np.all(np.isfinite(k)):
        raise ValueError(f"intrinsics must be a finite 3x3 matrix, got shape {k.shape}")
    fx, fy, cx, cy = -k[0, 0], -k[1, 1], k[0, 2], k[1, 2]
    if fx <= 0 or fy <= 0:
        raise ValueError(
            f"expected RLBench intrinsics (negative focal length), got fx={k[0, 0]}, fy={k[1, 1]}"
        )
    msg = CameraInfo(header=header, height=int(height), width=int(width), distortion_model="plumb_bob")
    msg.d = array.array("d", [0.0] * 5)
    msg.k = np.array([fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0])
    msg.r = np.eye(3).reshape(-1)
    msg.p = np.array([fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])
    return msg


def intrinsics_from_camera_info(msg: CameraInfo) -> tuple[np.ndarray, int, int]:
    """``CameraInfo`` -> (RLBench intrinsics with negative focal length, width, height).

    Distortion must be zero: the policy's point clouds assume rectified pinhole images.
    """
    w, h = int(msg.width), int(msg.height)
    if w <= 0 or h <= 0:
        raise MessageError(f"camera_info has size {w}x{h}")
    k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(k)):
        raise MessageError(f"camera_info K is not finite: {k.reshape(-1).tolist()}")
    if k[0, 0] <= 0 or k[1, 1] <= 0 or k[2, 2] != 1.0 or np.any(k[2, :2] != 0.0):
        raise MessageError(
            "camera_info K must be an OpenCV pinhole matrix with positive focal length, "
            f"got {k.reshape(-1).tolist()}"
        )
    d = np.asarray(msg.d, dtype=np.float64)
    if d.size and (not np.all(np.isfinite(d)) or np.any(d != 0.0)):
        raise MessageError(f"camera_info has distortion {d.tolist()}; rectified images (D = 0) are required")
    rlbench = k.copy()
    rlbench[0, 0], rlbench[1, 1] = -k[0, 0], -k[1, 1]
    return rlbench, w, h


# -- poses -------------------------------------------------------------------------------------------------


def quaternion_from_rotation(r: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a 3x3 rotation matrix (Shepperd's method: divide by the largest of the four terms).

    Plain float arithmetic: scipy's ``Rotation.from_matrix`` costs ~0.3 ms a call, a third of a set's budget.
    """
    (m00, m01, m02), (m10, m11, m12), (m20, m21, m22) = r.tolist()
    trace = m00 + m11 + m22
    if trace > max(m00, m11, m22):
        s = 2.0 * math.sqrt(1.0 + trace)
        x, y, z, w = (m21 - m12) / s, (m02 - m20) / s, (m10 - m01) / s, 0.25 * s
    elif m00 >= m11 and m00 >= m22:
        s = 2.0 * math.sqrt(1.0 + m00 - m11 - m22)
        x, y, z, w = 0.25 * s, (m01 + m10) / s, (m02 + m20) / s, (m21 - m12) / s
    elif m11 >= m22:
        s = 2.0 * math.sqrt(1.0 + m11 - m00 - m22)
        x, y, z, w = (m01 + m10) / s, 0.25 * s, (m12 + m21) / s, (m02 - m20) / s
    else:
        s = 2.0 * math.sqrt(1.0 + m22 - m00 - m11)
        x, y, z, w = (m02 + m20) / s, (m12 + m21) / s, 0.25 * s, (m10 - m01) / s
    norm = math.sqrt(x * x + y * y + z * z + w * w)
    return x / norm, y / norm, z / norm, w / norm


def rotation_from_quaternion(x: float, y: float, z: float, w: float) -> np.ndarray:
    """3x3 rotation matrix of a unit (x, y, z, w) quaternion."""
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def pose_from_matrix(matrix: np.ndarray, header: Header) -> PoseStamped:
    """4x4 rigid transform -> ``PoseStamped``."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise ValueError(f"pose must be a finite 4x4 matrix, got shape {m.shape}")
    qx, qy, qz, qw = quaternion_from_rotation(m[:3, :3])
    msg = PoseStamped(header=header)
    p, o = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z = (float(v) for v in m[:3, 3])
    o.x, o.y, o.z, o.w = float(qx), float(qy), float(qz), float(qw)
    return msg


def matrix_from_pose(msg: PoseStamped | Pose) -> np.ndarray:
    """``PoseStamped`` or ``Pose`` -> 4x4; a NaN or far-from-unit quaternion raises :class:`MessageError`."""
    pose = msg.pose if isinstance(msg, PoseStamped) else msg
    p, o = pose.position, pose.orientation
    position = np.array([p.x, p.y, p.z], dtype=np.float64)
    quat = np.array([o.x, o.y, o.z, o.w], dtype=np.float64)
    if not (np.all(np.isfinite(position)) and np.all(np.isfinite(quat))):
        raise MessageError(
            f"pose contains NaN or infinity: position {position.tolist()}, quat {quat.tolist()}"
        )
    norm = float(np.linalg.norm(quat))
    if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
        raise MessageError(f"pose quaternion norm is {norm:.4f}, expected 1 (xyzw order)")
    m = np.eye(4)
    m[:3, :3] = rotation_from_quaternion(*(quat / norm).tolist())
    m[:3, 3] = position
    return m


def camera_pose_from_extrinsics(extrinsics: np.ndarray, header: Header) -> PoseStamped:
    """RLBench camera-to-world extrinsics -> pose of the camera's optical frame in the world."""
    return pose_from_matrix(np.asarray(extrinsics, dtype=np.float64) @ RLBENCH_FROM_CV, header)


def extrinsics_from_camera_pose(msg: PoseStamped) -> np.ndarray:
    """Optical-frame pose -> RLBench extrinsics (``RLBENCH_FROM_CV`` is its own inverse)."""
    return matrix_from_pose(msg) @ RLBENCH_FROM_CV


def camera_set_messages(cameras: Mapping[str, CameraFrame], stamp: Time) -> dict[tuple[str, str], Any]:
    """The messages of one camera set, keyed by (camera, kind): rgb, depth and camera_info in the camera's
    optical frame, the pose in ``world``, all with ``stamp``."""
    out: dict[tuple[str, str], Any] = {}
    for cam, frame in cameras.items():
        header = make_header(stamp, optical_frame(cam))
        height, width = np.asarray(frame.depth).shape
        out[(cam, IMAGE_KIND)] = rgb_to_image(frame.rgb, header)
        out[(cam, DEPTH_KIND)] = depth_to_image(frame.depth, header)
        out[(cam, CAMERA_INFO_KIND)] = camera_info_from_intrinsics(frame.intrinsics, width, height, header)
        out[(cam, POSE_KIND)] = camera_pose_from_extrinsics(frame.extrinsics, make_header(stamp, WORLD_FRAME))
    return out


# -- actions, joints, status -------------------------------------------------------------------------------


def action_to_message(action: KeyframeAction | np.ndarray | list[float]) -> Float64MultiArray:
    """RLBench keyframe action -> ``Float64MultiArray`` labelled with :data:`ACTION_LAYOUT_LABEL`."""
    if not isinstance(action, KeyframeAction):
        action = KeyframeAction.from_vector(action)  # raises InvalidActionError
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label=ACTION_LAYOUT_LABEL, size=ACTION_SIZE, stride=ACTION_SIZE)]
    msg.data = array.array("d", action.to_vector().tolist())
    return msg


def target_pose_message(action: KeyframeAction, stamp: Time) -> PoseStamped:
    """The ``target_pose`` a sender publishes beside its ``keyframe_action`` (for visualisation)."""
    msg = PoseStamped(header=make_header(stamp, WORLD_FRAME))
    p, o = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z = (float(v) for v in action.position)
    o.x, o.y, o.z, o.w = (float(v) for v in action.quaternion)
    return msg


def action_vector_from_message(msg: Float64MultiArray) -> np.ndarray:
    """The raw action vector of a ``keyframe_action`` message, after checking its layout.

    The layout may be empty (a bare ``data`` array); if present it must be one dimension labelled
    :data:`ACTION_LAYOUT_LABEL`. Values (length, NaN, quaternion) are checked by
    :meth:`KeyframeAction.from_vector`.
    """
    dims = list(msg.layout.dim)
    if dims:
        if len(dims) != 1 or dims[0].label != ACTION_LAYOUT_LABEL:
            labels = [d.label for d in dims]
            raise MessageError(
                f"keyframe_action layout must be one dimension {ACTION_LAYOUT_LABEL!r}, got {labels}"
            )
        if msg.layout.data_offset != 0:
            raise MessageError(f"keyframe_action layout data_offset must be 0, got {msg.layout.data_offset}")
    return np.asarray(msg.data, dtype=np.float64)


def action_from_message(msg: Float64MultiArray) -> KeyframeAction:
    """``keyframe_action`` -> validated :class:`KeyframeAction` (MessageError / InvalidActionError)."""
    return KeyframeAction.from_vector(action_vector_from_message(msg))


def joint_state_from_observation(observation: Observation, header: Header) -> JointState:
    """Arm and finger joints of an observation (finger positions in metres, as the Panda URDF)."""
    msg = JointState(header=header, name=list(PANDA_JOINT_NAMES))
    zeros2 = [0.0, 0.0]
    msg.position = array.array(
        "d", [*map(float, observation.joint_positions), *map(float, observation.gripper_joint_positions)]
    )
    msg.velocity = array.array("d", [*map(float, observation.joint_velocities), *zeros2])
    msg.effort = array.array("d", [*map(float, observation.joint_forces), *zeros2])
    return msg


def status_to_message(status: EpisodeStatus) -> String:
    return String(data=status.to_json())


def status_from_message(msg: String) -> EpisodeStatus:
    return EpisodeStatus.from_json(msg.data)


def seconds(stamp: Time) -> float:
    """A stamp in floating-point seconds (for logs and the status JSON)."""
    return stamp.sec + stamp.nanosec * 1e-9


def read_status(node: Node, msg: String, throttle_sec: float) -> EpisodeStatus | None:
    """The episode status in ``msg``; a malformed one is ignored with a throttled warning (None), since a bad
    message from another process must not stop the node."""
    try:
        return status_from_message(msg)
    except MessageError as err:
        node.get_logger().warning(
            f"ignoring malformed episode_status: {err}", throttle_duration_sec=throttle_sec
        )
        return None
