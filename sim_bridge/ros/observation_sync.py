"""Subscriber-side assembly of time-consistent camera sets from the bridge's per-camera streams.

The bridge stamps all 16 messages of a set (rgb, depth, camera_info and pose of four cameras) identically, so
sets are matched on the exact stamp (message_filters is not on PyPI, and approximate matching would only hide
bugs). :class:`CameraSetSynchronizer` is plain Python fed by subscription callbacks, so it is tested without a
ROS graph; :func:`subscribe_camera_sets` creates its subscriptions on a node.

Rules: a set is delivered when its last message arrives; older incomplete sets are then dropped (the stream
has moved on); at most ``queue_size`` incomplete sets are kept; a set older than ``max_age`` when it
completes is rejected as stale; malformed messages are counted and skipped, never raised. Every drop is
counted in :class:`SyncStats`.

Stamps are judged against the synchroniser's clock (the node's, so simulated time works too): a message
stamped more than ``max_future`` ahead of it is rejected, so one wrong-clock message can never become the
newest set and make every later real one look late; a message more than ``jump_back`` seconds older than the
newest set is a clock jump back (a replayed bag, a restarted simulator, an NTP step), and the synchroniser
starts over from it instead of calling the rest of the stream late. Depth must lie within the camera's
near/far planes (with ``depth_tolerance``): 32-bit float bytes labelled 16UC1 decode to tens of metres and are
refused. Each rejection is counted and logged per reason (:class:`mirror_common.reasons.ReasonLog`).

Output frames follow RLBench conventions (negative-f intrinsics, RLBench extrinsics, metric depth), so they
drop into :class:`sim_bridge.observation.Observation`. Invalid depth pixels (NaN, inf, <= 0 on the wire) are
NaN: the point cloud holds NaN points there and any bounds crop removes them. Masks are not streamed; frames
carry an all-zero mask. near/far come from the RLBench rig spec of the camera name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mirror_common.reasons import ReasonLog
from sim_bridge.cameras import CAMERA_NAMES, IMAGE_SIZE, RLBENCH_CAMERAS
from sim_bridge.observation import CameraFrame
from sim_bridge.ros.errors import MessageError
from sim_bridge.ros.messages import (
    extrinsics_from_camera_pose,
    image_to_depth,
    image_to_rgb,
    intrinsics_from_camera_info,
    stamp_to_ns,
)
from sim_bridge.ros.topics import (
    CAMERA_INFO_KIND,
    CAMERA_KINDS,
    DEPTH_KIND,
    IMAGE_KIND,
    JOINT_STATES_TOPIC,
    POSE_KIND,
)

log = logging.getLogger(__name__)

JOINT_STATES_KEY = ("", JOINT_STATES_TOPIC)  # the one per-set stream that belongs to no camera


@dataclass
class SyncConfig:
    cameras: tuple[str, ...] = CAMERA_NAMES
    image_size: tuple[int, int] | None = (IMAGE_SIZE, IMAGE_SIZE)  # expected (H, W); None accepts any
    queue_size: int = 8  # incomplete sets kept while waiting for their last message
    max_age: float = 0.5  # seconds; a set older than this when it completes is rejected
    with_joint_states: bool = False  # also require joint_states with the set's stamp
    max_future: float = 1.0  # seconds a stamp may be ahead of the clock (transport, clock skew)
    jump_back: float = 2.0  # seconds older than the newest set that mean the stream's clock jumped back
    depth_tolerance: float = 0.05  # metres beyond the camera's near/far still accepted

    def __post_init__(self) -> None:
        unknown = [c for c in self.cameras if c not in CAMERA_NAMES]
        if unknown or not self.cameras:
            raise ValueError(f"cameras must be a non-empty subset of {CAMERA_NAMES}, got {self.cameras}")
        if self.queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {self.queue_size}")
        if not self.max_age > 0:
            raise ValueError(f"max_age must be positive, got {self.max_age}")
        if not (self.max_future >= 0 and self.jump_back > 0 and self.depth_tolerance >= 0):
            raise ValueError("max_future and depth_tolerance must be >= 0 and jump_back positive")


@dataclass
class SyncStats:
    completed: int = 0  # sets delivered
    dropped_incomplete: int = 0  # superseded by a newer complete set, evicted from a full queue, or too old
    stale: int = 0  # complete, but older than max_age
    malformed: int = 0  # messages (or sets with inconsistent sizes) that could not be converted
    late: int = 0  # messages for a set already delivered or dropped
    future: int = 0  # messages stamped more than max_future ahead of the clock
    clock_jumps: int = 0  # times the stream's clock jumped back and the synchroniser started over

    @property
    def dropped(self) -> int:
        return self.dropped_incomplete + self.stale


@dataclass
class CameraSet:
    """One time-consistent observation of all cameras."""

    stamp_ns: int
    frames: dict[str, CameraFrame]
    completed_ns: int  # synchroniser clock when the last message arrived
    joint_positions: np.ndarray | None = None  # (9,) arm + finger joints when joint_states are synced

    @property
    def latency(self) -> float:
        """Seconds from the set's stamp to its completion."""
        return (self.completed_ns - self.stamp_ns) * 1e-9


@dataclass
class _Pending:
    parts: dict[tuple[str, str], Any] = field(default_factory=dict)


class CameraSetSynchronizer:
    """Exact-stamp synchroniser of the bridge's camera streams. Feed it from one executor thread."""

    def __init__(
        self,
        config: SyncConfig | None = None,
        on_set: Callable[[CameraSet], None] | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.config = config or SyncConfig()
        self.on_set = on_set
        self.clock: Callable[[], int] = clock or time.time_ns
        self.stats = SyncStats()
        self.latest: CameraSet | None = None
        self.rejections = ReasonLog(log)
        self._pending: dict[int, _Pending] = {}
        self._newest_done = -1  # stamp of the newest set delivered or dropped
        self._required = {(c, k) for c in self.config.cameras for k in CAMERA_KINDS}
        if self.config.with_joint_states:
            self._required.add(JOINT_STATES_KEY)
        self._seen: set[tuple[str, str]] = set()

    # -- feeding -------------------------------------------------------------------------------------------
    def add(self, camera: str, kind: str, msg: Any) -> CameraSet | None:
        """Add one message (``camera`` is ignored for joint_states); returns the set it completes, if any."""
        key = JOINT_STATES_KEY if kind == JOINT_STATES_TOPIC else (camera, kind)
        if key not in self._required:
            raise ValueError(f"this synchroniser does not take {camera}/{kind}")
        stamp = stamp_to_ns(msg.header.stamp)
        now = self.clock()
        ahead = stamp - now
        if now > 0 and ahead > self.config.max_future * 1e9:  # 0: simulated time has not started yet
            self.stats.future += 1
            self.rejections.record(
                "future stamp",
                f"{camera or 'joint_states'}/{kind} stamped {ahead * 1e-9:.3f} s ahead of this node's clock "
                f"(more than {self.config.max_future:g} s)",
            )
            return None
        if stamp <= self._newest_done:
            if self._newest_done - stamp <= self.config.jump_back * 1e9:
                self.stats.late += 1
                return None
            self._start_over(stamp)
        try:
            value = self._convert(kind, msg)
        except MessageError as err:
            self._malformed(f"{camera}/{kind} at {stamp * 1e-9:.3f}: {err}")
            return None
        self._seen.add(key)
        pending = self._pending.get(stamp)
        if pending is None:
            pending = self._pending[stamp] = _Pending()
            self._prune(stamp)
        pending.parts[key] = value
        if len(pending.parts) < len(self._required):
            return None
        return self._complete(stamp, pending)

    def add_rgb(self, camera: str, msg: Any) -> CameraSet | None:
        return self.add(camera, IMAGE_KIND, msg)

    def add_depth(self, camera: str, msg: Any) -> CameraSet | None:
        return self.add(camera, DEPTH_KIND, msg)

    def add_camera_info(self, camera: str, msg: Any) -> CameraSet | None:
        return self.add(camera, CAMERA_INFO_KIND, msg)

    def add_pose(self, camera: str, msg: Any) -> CameraSet | None:
        return self.add(camera, POSE_KIND, msg)

    def _start_over(self, stamp: int) -> None:
        back = (self._newest_done - stamp) * 1e-9
        self.stats.clock_jumps += 1
        self.rejections.record(
            "clock jump", f"stamps jumped {back:.3f} s back; dropped {len(self._pending)} pending set(s)"
        )
        self.stats.dropped_incomplete += len(self._pending)
        self._pending.clear()
        self._newest_done = -1

    # -- reporting -----------------------------------------------------------------------------------------
    @property
    def last_error(self) -> str:
        """The newest rejection's message ("" if none); :meth:`describe_rejections` gives each reason's."""
        return self.rejections.last_message

    def describe_rejections(self) -> str:
        """The latest rejection of each recent reason with its age (for watchdog lines)."""
        return self.rejections.describe()

    def missing_cameras(self) -> dict[str, list[str]]:
        """Streams missing from the newest incomplete set ({camera: [kinds]}; joint_states under "").

        With nothing pending: every stream never received so far (empty once sets flow normally).
        """
        if self._pending:
            have = self._pending[max(self._pending)].parts.keys()
            missing = self._required - have
        else:
            missing = self._required - self._seen
        report: dict[str, list[str]] = {}
        for camera, kind in sorted(missing):
            report.setdefault(camera, []).append(kind)
        return report

    def describe_missing(self) -> str:
        """One log line naming what is missing, e.g. ``"wrist: depth, pose"``."""
        report = self.missing_cameras()
        if not report:
            return "nothing missing"
        return "; ".join(f"{cam or 'set'}: {', '.join(kinds)}" for cam, kinds in report.items())

    # -- internals -----------------------------------------------------------------------------------------
    def _convert(self, kind: str, msg: Any) -> Any:
        shape = self.config.image_size
        if kind == IMAGE_KIND:
            return image_to_rgb(msg, shape)
        if kind == DEPTH_KIND:
            return image_to_depth(msg, shape)
        if kind == CAMERA_INFO_KIND:
            intrinsics, width, height = intrinsics_from_camera_info(msg)
            if shape is not None and (height, width) != tuple(shape):
                raise MessageError(f"camera_info is {width}x{height}, expected {shape[1]}x{shape[0]}")
            return intrinsics, width, height
        if kind == POSE_KIND:
            return extrinsics_from_camera_pose(msg)
        positions = np.asarray(msg.position, dtype=np.float64)
        if positions.size != len(msg.name) or not np.all(np.isfinite(positions)):
            raise MessageError(f"joint_states has {len(msg.name)} names and positions {positions.tolist()}")
        return positions

    def _prune(self, newest: int) -> None:
        """Evict incomplete sets beyond the queue bound or older than max_age."""
        oldest_allowed = self.clock() - int(self.config.max_age * 1e9)
        for stamp in sorted(self._pending):
            too_many = len(self._pending) > self.config.queue_size
            if stamp != newest and (too_many or stamp < oldest_allowed):
                del self._pending[stamp]
                self.stats.dropped_incomplete += 1

    def _complete(self, stamp: int, pending: _Pending) -> CameraSet | None:
        del self._pending[stamp]
        for older in [s for s in self._pending if s < stamp]:
            del self._pending[older]
            self.stats.dropped_incomplete += 1
        self._newest_done = stamp
        now = self.clock()
        if now - stamp > self.config.max_age * 1e9:
            self.stats.stale += 1
            self.rejections.record("stale", f"set at {stamp * 1e-9:.3f} is {(now - stamp) * 1e-9:.3f} s old")
            return None
        frames: dict[str, CameraFrame] = {}
        for cam in self.config.cameras:
            rgb, depth = pending.parts[(cam, IMAGE_KIND)], pending.parts[(cam, DEPTH_KIND)]
            intrinsics, width, height = pending.parts[(cam, CAMERA_INFO_KIND)]
            if rgb.shape[:2] != (height, width) or depth.shape != (height, width):
                self._malformed(
                    f"{cam}: rgb {rgb.shape[:2]}, depth {depth.shape} and camera_info {height}x{width} differ"
                )
                return None
            spec = RLBENCH_CAMERAS.get(cam)
            near, far = (spec.near, spec.far) if spec is not None else (0.0, float("inf"))
            out_of_range = self._depth_out_of_range(depth, near, far)
            if out_of_range:
                self._malformed(f"{cam}/depth at {stamp * 1e-9:.3f}: {out_of_range}")
                return None
            mask = np.zeros((height, width), dtype=np.int32)
            extrinsics = pending.parts[(cam, POSE_KIND)]
            frames[cam] = CameraFrame(rgb, depth, mask, intrinsics, extrinsics, near, far)
        joints = pending.parts.get(JOINT_STATES_KEY)
        result = CameraSet(stamp, frames, now, joints)
        self.latest = result
        self.stats.completed += 1
        if self.on_set is not None:
            self.on_set(result)
        return result

    def _depth_out_of_range(self, depth: np.ndarray, near: float, far: float) -> str:
        """Why valid depth pixels lie outside the camera's clip planes ("" if they do not)."""
        valid = depth[np.isfinite(depth)]
        if not valid.size:
            return ""
        low, high = float(valid.min()), float(valid.max())
        tolerance = self.config.depth_tolerance
        if low < near - tolerance or high > far + tolerance:
            return (
                f"depth spans {low:.3f}-{high:.3f} m, outside the camera's {near:g}-{far:g} m "
                "(wrong encoding or units?)"
            )
        return ""

    def _malformed(self, message: str) -> None:
        self.stats.malformed += 1
        self.rejections.record("malformed", message)


def subscribe_camera_sets(node: Any, sync: CameraSetSynchronizer, qos: Any = None) -> list[Any]:
    """Create the subscriptions feeding ``sync`` on an rclpy node (topic names relative to its namespace).

    ``qos`` defaults to the bridge's sensor QoS (best effort, keep last 5). The synchroniser's clock becomes
    the node's clock, so ``max_age`` also works with simulated time.
    """
    from geometry_msgs.msg import PoseStamped
    from sensor_msgs.msg import CameraInfo, Image, JointState

    from mirror_common.ros.qos import sensor_qos
    from sim_bridge.ros.topics import camera_topic

    qos = qos if qos is not None else sensor_qos()
    sync.clock = lambda: node.get_clock().now().nanoseconds
    types = {IMAGE_KIND: Image, DEPTH_KIND: Image, CAMERA_INFO_KIND: CameraInfo, POSE_KIND: PoseStamped}
    subscriptions = []
    for camera in sync.config.cameras:
        for kind in CAMERA_KINDS:

            def callback(msg: Any, camera: str = camera, kind: str = kind) -> None:
                sync.add(camera, kind, msg)

            subscriptions.append(
                node.create_subscription(types[kind], camera_topic(camera, kind), callback, qos)
            )
    if sync.config.with_joint_states:
        subscriptions.append(
            node.create_subscription(
                JointState, JOINT_STATES_TOPIC, lambda msg: sync.add("", JOINT_STATES_TOPIC, msg), qos
            )
        )
    return subscriptions
