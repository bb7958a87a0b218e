"""Message conversions, status JSON and the camera-set synchroniser, on message objects (no ROS graph)."""

from __future__ import annotations

import array
import json
import logging

import numpy as np
import pytest
from ros_test_support import require_module  # noqa: E402

require_module("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from geometry_msgs.msg import Pose  # noqa: E402
from std_msgs.msg import Float64MultiArray, Header, MultiArrayDimension  # noqa: E402

from sim_bridge.actions import KeyframeAction  # noqa: E402
from sim_bridge.cameras import (  # noqa: E402
    CAMERA_NAMES,
    RLBENCH_CAMERAS,
    look_at_extrinsics,
    project_world_points,
)
from sim_bridge.errors import InvalidActionError  # noqa: E402
from sim_bridge.observation import CameraFrame  # noqa: E402
from sim_bridge.ros.errors import MessageError  # noqa: E402
from sim_bridge.ros.messages import (  # noqa: E402
    action_from_message,
    action_to_message,
    camera_info_from_intrinsics,
    camera_pose_from_extrinsics,
    camera_set_messages,
    depth_to_image,
    extrinsics_from_camera_pose,
    image_to_depth,
    image_to_rgb,
    intrinsics_from_camera_info,
    make_header,
    matrix_from_pose,
    ns_to_stamp,
    pose_from_matrix,
    quaternion_from_rotation,
    rgb_to_image,
    rotation_from_quaternion,
    stamp_to_ns,
    target_pose_message,
)
from sim_bridge.ros.observation_sync import CameraSetSynchronizer, SyncConfig  # noqa: E402
from sim_bridge.ros.status import EpisodeStatus  # noqa: E402
from sim_bridge.ros.topics import ACTION_LAYOUT_LABEL, CAMERA_KINDS, camera_topic, optical_frame  # noqa: E402

SIZE = 128
RNG = np.random.default_rng(0)


def header(sec: int = 100, nanosec: int = 5, frame: str = "front_optical_frame") -> Header:
    return make_header(Time(sec=sec, nanosec=nanosec), frame)


def random_frame(name: str) -> CameraFrame:
    spec = RLBENCH_CAMERAS[name]
    position = np.array([0.1, -0.2, 1.4]) if spec.mounted_on_tip else np.asarray(spec.position)
    axis = np.array([0.2, 0.1, -1.0]) if spec.mounted_on_tip else np.asarray(spec.axis)
    rgb = RNG.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    depth = RNG.uniform(0.5, 2.0, (SIZE, SIZE)).astype(np.float32)
    return CameraFrame(
        rgb,
        depth,
        np.zeros((SIZE, SIZE), np.int32),
        spec.intrinsics(SIZE),
        look_at_extrinsics(position, axis),
        spec.near,
        spec.far,
    )


# -- images ----------------------------------------------------------------------------------------------


def test_rgb_round_trip_is_exact_and_fills_data_from_bytes():
    rgb = RNG.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    msg = rgb_to_image(rgb, header())
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("rgb8", SIZE, SIZE, 3 * SIZE)
    assert isinstance(msg.data, array.array) and len(msg.data) == rgb.nbytes
    np.testing.assert_array_equal(image_to_rgb(msg, (SIZE, SIZE)), rgb)


def test_bgr8_and_padded_rows_are_decoded():
    rgb = RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    padded = np.zeros((4, 5 * 3 + 7), np.uint8)  # 7 bytes of row padding
    padded[:, :15] = rgb[..., ::-1].reshape(4, 15)
    msg = rgb_to_image(rgb, header())
    msg.encoding, msg.step = "bgr8", padded.shape[1]
    msg.data = array.array("B", padded.tobytes())
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m: setattr(m, "encoding", "mono8"), "rgb8 or bgr8"),
        (lambda m: setattr(m, "data", m.data[:-1]), "expected step x height"),
        (lambda m: setattr(m, "step", 10), "shorter than a row"),
        (lambda m: setattr(m, "height", 0), "size"),
    ],
)
def test_malformed_rgb_images_raise_message_error(change, match):
    msg = rgb_to_image(np.zeros((8, 8, 3), np.uint8), header())
    change(msg)
    with pytest.raises(MessageError, match=match):
        image_to_rgb(msg)


def test_rgb_of_the_wrong_size_is_refused_when_a_size_is_expected():
    msg = rgb_to_image(np.zeros((64, 64, 3), np.uint8), header())
    with pytest.raises(MessageError, match="expected 128x128"):
        image_to_rgb(msg, (SIZE, SIZE))


def test_depth_round_trip_in_metres():
    depth = RNG.uniform(0.01, 4.5, (SIZE, SIZE)).astype(np.float32)
    msg = depth_to_image(depth, header())
    assert (msg.encoding, msg.step, len(msg.data)) == ("32FC1", 4 * SIZE, depth.nbytes)
    np.testing.assert_array_equal(image_to_depth(msg), depth)


def test_big_endian_depth_and_invalid_values_become_nan():
    depth = np.array([[1.5, np.nan], [np.inf, -2.0], [0.0, 3.25]], dtype=np.float32)
    msg = depth_to_image(np.zeros((3, 2), np.float32), header())
    msg.is_bigendian = 1
    msg.data = array.array("B", depth.astype(">f4").tobytes())
    out = image_to_depth(msg)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(out), [[False, True], [True, True], [True, False]])
    assert out[0, 0] == 1.5 and out[2, 1] == 3.25


def test_16uc1_millimetres_with_zero_as_invalid():
    mm = np.array([[0, 1500], [2, 65535]], dtype=np.uint16)
    msg = depth_to_image(np.zeros((2, 2), np.float32), header())
    msg.encoding, msg.step, msg.is_bigendian = "16UC1", 4, 0
    msg.data = array.array("B", mm.astype("<u2").tobytes())
    out = image_to_depth(msg)
    assert np.isnan(out[0, 0])
    np.testing.assert_allclose(out[[0, 1, 1], [1, 0, 1]], [1.5, 0.002, 65.535], rtol=1e-6)


def test_depth_with_wrong_encoding_or_truncated_data_is_refused():
    msg = depth_to_image(np.ones((4, 4), np.float32), header())
    msg.encoding = "rgb8"
    with pytest.raises(MessageError, match="32FC1"):
        image_to_depth(msg)
    msg = depth_to_image(np.ones((4, 4), np.float32), header())
    msg.data = msg.data[:10]
    with pytest.raises(MessageError, match="holds 10 bytes"):
        image_to_depth(msg)


# -- calibration and poses ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CAMERA_NAMES)
def test_camera_info_uses_positive_focal_length_and_round_trips(name):
    k_rl = RLBENCH_CAMERAS[name].intrinsics(SIZE)
    msg = camera_info_from_intrinsics(k_rl, SIZE, SIZE, header(frame=optical_frame(name)))
    f = abs(k_rl[0, 0])
    np.testing.assert_allclose(msg.k, [f, 0, 64, 0, f, 64, 0, 0, 1])
    np.testing.assert_allclose(msg.p, [f, 0, 64, 0, 0, f, 64, 0, 0, 0, 1, 0])
    assert (msg.width, msg.height, msg.distortion_model, list(msg.d)) == (SIZE, SIZE, "plumb_bob", [0.0] * 5)
    k_back, w, h = intrinsics_from_camera_info(msg)
    np.testing.assert_allclose(k_back, k_rl)
    assert (w, h) == (SIZE, SIZE)


def test_opencv_calibration_projects_like_rlbench_conventions():
    """A world point lands on the same pixel through (K_rl, E_rl) and through the published K and pose."""
    frame = random_frame("front")
    info = camera_info_from_intrinsics(frame.intrinsics, SIZE, SIZE, header())
    pose = matrix_from_pose(camera_pose_from_extrinsics(frame.extrinsics, header(frame="world")))
    points = np.array([[0.2, 0.1, 0.8], [0.0, -0.3, 0.76], [0.4, 0.25, 1.0]])
    uv_rl, z_rl = project_world_points(points, frame.intrinsics, frame.extrinsics)
    cam = (points - pose[:3, 3]) @ pose[:3, :3]  # world -> optical frame
    k = np.asarray(info.k).reshape(3, 3)
    uv_cv = (cam @ k.T)[:, :2] / cam[:, 2:3]
    np.testing.assert_allclose(uv_cv, uv_rl, atol=1e-9)
    np.testing.assert_allclose(cam[:, 2], z_rl, atol=1e-12)
    assert np.all(cam[:, 2] > 0)  # in front of the camera: the optical frame's z looks forward


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("d", array.array("d", [0.1, 0, 0, 0, 0]), "distortion"),
        ("k", np.array([-100.0, 0, 64, 0, -100, 64, 0, 0, 1]), "positive focal length"),
        ("k", np.array([np.nan, 0, 64, 0, 100, 64, 0, 0, 1]), "not finite"),
        ("width", 0, "size"),
    ],
)
def test_malformed_camera_info_is_refused(field, value, match):
    msg = camera_info_from_intrinsics(RLBENCH_CAMERAS["front"].intrinsics(SIZE), SIZE, SIZE, header())
    setattr(msg, field, value)
    with pytest.raises(MessageError, match=match):
        intrinsics_from_camera_info(msg)


@pytest.mark.parametrize("name", CAMERA_NAMES)
def test_camera_pose_is_the_optical_frame_and_round_trips_to_rlbench_extrinsics(name):
    frame = random_frame(name)
    msg = camera_pose_from_extrinsics(frame.extrinsics, header(frame="world"))
    optical = matrix_from_pose(msg)
    np.testing.assert_allclose(optical[:3, 0], -frame.extrinsics[:3, 0], atol=1e-12)  # x right = -x_rlbench
    np.testing.assert_allclose(optical[:3, 2], frame.extrinsics[:3, 2], atol=1e-12)  # z forward unchanged
    np.testing.assert_allclose(extrinsics_from_camera_pose(msg), frame.extrinsics, atol=1e-12)


def test_quaternion_conversion_matches_scipy_including_half_turns():
    from scipy.spatial.transform import Rotation

    mats = [*Rotation.random(200, random_state=3).as_matrix(), np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1])]
    mats += [np.diag([-1.0, -1, 1]), np.eye(3)]
    for m in mats:
        q = np.array(quaternion_from_rotation(m))
        expected = Rotation.from_matrix(m).as_quat()
        assert (
            min(np.abs(q - expected).max(), np.abs(q + expected).max()) < 1e-12
        )  # q and -q are one rotation
        np.testing.assert_allclose(rotation_from_quaternion(*q), m, atol=1e-12)


def test_nan_or_non_unit_poses_are_refused():
    msg = pose_from_matrix(np.eye(4), header(frame="world"))
    msg.pose.position.y = float("nan")
    with pytest.raises(MessageError, match="NaN"):
        matrix_from_pose(msg)
    pose = Pose()
    pose.orientation.w = 0.5
    with pytest.raises(MessageError, match="norm"):
        matrix_from_pose(pose)


def test_stamps_convert_exactly():
    ns = 1_712_345_678_987_654_321
    stamp = ns_to_stamp(ns)
    assert (stamp.sec, stamp.nanosec) == (1_712_345_678, 987_654_321)
    assert stamp_to_ns(stamp) == ns


# -- actions and status ------------------------------------------------------------------------------------


def test_action_message_carries_the_rlbench_layout():
    vector = [0.1, 0.2, 0.9, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    msg = action_to_message(vector)
    assert [d.label for d in msg.layout.dim] == [ACTION_LAYOUT_LABEL]
    assert (msg.layout.dim[0].size, len(msg.data)) == (9, 9)
    np.testing.assert_allclose(action_from_message(msg).to_vector(), vector)


def test_target_pose_mirrors_the_action():
    action = KeyframeAction.from_vector([0.1, 0.2, 0.9, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    msg = target_pose_message(action, Time(sec=3))
    assert msg.header.frame_id == "world" and msg.header.stamp.sec == 3
    np.testing.assert_allclose(matrix_from_pose(msg)[:3, 3], [0.1, 0.2, 0.9])
    assert (msg.pose.orientation.y, msg.pose.orientation.w) == (1.0, 0.0)


def test_action_without_layout_is_accepted_and_bad_values_raise():
    msg = Float64MultiArray(data=array.array("d", [0.1, 0.2, 0.9, 0, 1, 0, 0, 1, 1]))
    action = action_from_message(msg)
    assert isinstance(action, KeyframeAction) and action.ignore_collisions
    msg.data = array.array("d", [0.1, float("nan"), 0.9, 0, 1, 0, 0, 1, 1])
    with pytest.raises(InvalidActionError, match="NaN"):
        action_from_message(msg)
    msg.data = array.array("d", [0.1, 0.2, 0.3])
    with pytest.raises(InvalidActionError, match="8 or 9 values"):
        action_from_message(msg)


def test_action_with_a_foreign_layout_is_a_message_error():
    msg = action_to_message([0.1, 0.2, 0.9, 0, 1, 0, 0, 1, 0])
    msg.layout.dim = [MultiArrayDimension(label="joint_positions", size=9, stride=9)]
    with pytest.raises(MessageError, match="layout"):
        action_from_message(msg)


def test_status_json_round_trip_and_validation():
    status = EpisodeStatus("push_buttons", 2, "push the maroon button", 7, 3, 1, "executing", "", True, 12.5)
    text = status.to_json()
    assert set(json.loads(text)) == {
        "task", "variation", "instruction", "seed", "episode", "step", "state", "reason", "busy", "stamp",
    }  # fmt: skip
    assert EpisodeStatus.from_json(text) == status
    for bad, match in [
        ("not json", "not JSON"),
        ("[1]", "object"),
        (json.dumps({"task": "x"}), "lacks"),
        (text.replace('"busy": true', '"busy": 1'), "busy"),
        (text.replace('"executing"', '"dancing"'), "unknown episode state"),
    ]:
        with pytest.raises(MessageError, match=match):
            EpisodeStatus.from_json(bad)


def test_topic_names():
    assert camera_topic("wrist", "depth") == "cameras/wrist/depth"
    with pytest.raises(ValueError, match="unknown camera"):
        camera_topic("overhead", "depth")


# -- synchroniser ------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, ns: int) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


def set_messages(frames: dict[str, CameraFrame], stamp_ns: int) -> list[tuple[str, str, object]]:
    return [
        (cam, kind, msg) for (cam, kind), msg in camera_set_messages(frames, ns_to_stamp(stamp_ns)).items()
    ]


def feed(sync: CameraSetSynchronizer, messages) -> list:
    return [out for cam, kind, msg in messages if (out := sync.add(cam, kind, msg)) is not None]


FRAMES = {name: random_frame(name) for name in CAMERA_NAMES}
T0 = 1_000 * 10**9


def test_a_complete_set_reproduces_the_frames_in_rlbench_conventions():
    clock = FakeClock(T0 + 3_000_000)
    sync = CameraSetSynchronizer(clock=clock)
    messages = set_messages(FRAMES, T0)
    assert len(messages) == 16
    done = feed(sync, messages)
    assert len(done) == 1 and sync.latest is done[0]
    result = done[0]
    assert result.stamp_ns == T0 and result.latency == pytest.approx(0.003)
    for name, frame in FRAMES.items():
        got = result.frames[name]
        np.testing.assert_array_equal(got.rgb, frame.rgb)
        np.testing.assert_array_equal(got.depth, frame.depth)
        np.testing.assert_allclose(got.intrinsics, frame.intrinsics)
        assert got.intrinsics[0, 0] < 0  # RLBench convention again
        np.testing.assert_allclose(got.extrinsics, frame.extrinsics, atol=1e-12)
        np.testing.assert_allclose(got.point_cloud(), frame.point_cloud(), atol=1e-9)
        assert (got.near, got.far) == (frame.near, frame.far)
    assert sync.stats.completed == 1 and sync.stats.dropped == 0 and sync.missing_cameras() == {}


def test_interleaved_sets_complete_in_order_and_an_incomplete_older_set_is_dropped():
    clock = FakeClock(T0)
    sync = CameraSetSynchronizer(clock=clock)
    first, second, third = (set_messages(FRAMES, T0 + i * 10**8) for i in range(3))
    clock.ns = T0 + 3 * 10**8
    interleaved = [m for pair in zip(first, second) for m in pair]
    done = feed(sync, interleaved)
    assert [s.stamp_ns for s in done] == [T0, T0 + 10**8]
    # Set 3 loses the wrist depth; set 4 completes and supersedes it.
    lossy = [m for m in third if (m[0], m[1]) != ("wrist", "depth")]
    assert feed(sync, lossy) == []
    assert sync.missing_cameras() == {"wrist": ["depth"]}
    assert sync.describe_missing() == "wrist: depth"
    fourth = set_messages(FRAMES, T0 + 3 * 10**8)
    assert [s.stamp_ns for s in feed(sync, fourth)] == [T0 + 3 * 10**8]
    assert sync.stats.dropped_incomplete == 1
    # The lost message turning up now is late, not the start of a new set.
    assert sync.add("wrist", "depth", {(c, k): m for c, k, m in third}[("wrist", "depth")]) is None
    assert sync.stats.late == 1


def test_queue_bound_and_max_age_drop_incomplete_sets():
    clock = FakeClock(T0)
    sync = CameraSetSynchronizer(SyncConfig(queue_size=2, max_age=0.5), clock=clock)
    for i in range(4):  # only the front rgb of four sets: all stay incomplete
        cam, kind, msg = set_messages({"front": FRAMES["front"]}, T0 + i)[0]
        sync.add(cam, kind, msg)
    assert sync.stats.dropped_incomplete == 2
    assert set(sync.missing_cameras()) == set(CAMERA_NAMES)
    clock.ns = T0 + 2 * 10**9  # every pending set is now older than max_age
    cam, kind, msg = set_messages({"front": FRAMES["front"]}, T0 + 10**9 * 2)[0]
    sync.add(cam, kind, msg)
    assert sync.stats.dropped_incomplete == 4


def test_stale_complete_sets_are_rejected():
    clock = FakeClock(T0 + 2 * 10**9)
    sync = CameraSetSynchronizer(SyncConfig(max_age=0.5), clock=clock)
    assert feed(sync, set_messages(FRAMES, T0)) == []
    assert sync.stats.stale == 1 and sync.latest is None and "old" in sync.last_error


def test_malformed_messages_are_counted_not_raised():
    clock = FakeClock(T0)
    sync = CameraSetSynchronizer(clock=clock)
    messages = set_messages(FRAMES, T0)
    for cam, kind, msg in messages:
        if (cam, kind) == ("left_shoulder", "image_raw"):
            msg.encoding = "mono8"
        if (cam, kind) == ("front", "pose"):
            msg.pose.orientation.x = float("nan")
    assert feed(sync, messages) == []
    assert sync.stats.malformed == 2 and "left_shoulder/image_raw" in sync.last_error
    assert sync.missing_cameras() == {"front": ["pose"], "left_shoulder": ["image_raw"]}


def test_inconsistent_sizes_within_a_camera_are_malformed():
    sync = CameraSetSynchronizer(SyncConfig(image_size=None), clock=FakeClock(T0))
    small = dict(FRAMES)
    front = FRAMES["front"]
    small["front"] = CameraFrame(
        front.rgb[:64, :64].copy(), front.depth, front.mask, front.intrinsics, front.extrinsics, 0.01, 4.5
    )
    assert feed(sync, set_messages(small, T0)) == []
    assert sync.stats.malformed == 1 and "front" in sync.last_error


def test_joint_states_can_be_required_in_a_set():
    from sensor_msgs.msg import JointState

    sync = CameraSetSynchronizer(SyncConfig(with_joint_states=True), clock=FakeClock(T0))
    assert feed(sync, set_messages(FRAMES, T0)) == []
    assert sync.missing_cameras() == {"": ["joint_states"]}
    joints = JointState(header=make_header(ns_to_stamp(T0), ""), name=[f"j{i}" for i in range(9)])
    joints.position = array.array("d", np.linspace(0, 1, 9).tolist())
    result = sync.add("", "joint_states", joints)
    assert result is not None
    np.testing.assert_allclose(result.joint_positions, np.linspace(0, 1, 9))


def test_unknown_streams_are_a_programming_error():
    sync = CameraSetSynchronizer(SyncConfig(cameras=("front",)))
    with pytest.raises(ValueError, match="does not take"):
        sync.add("wrist", "depth", None)
    assert set(CAMERA_KINDS) == {"image_raw", "depth", "camera_info", "pose"}


# -- faults: clocks and impossible frames ----------------------------------------------------------------


@pytest.mark.faults
def test_one_future_stamped_set_does_not_blind_the_synchroniser():
    """Before: one set stamped 11 days ahead became the newest, and every later real set was 'late'."""
    clock = FakeClock(T0)
    sync = CameraSetSynchronizer(clock=clock)
    eleven_days = 11 * 24 * 3600 * 10**9
    assert feed(sync, set_messages(FRAMES, T0 + eleven_days)) == []
    assert sync.stats.future == 16 and sync.stats.late == 0
    assert (
        "future stamp x16" in sync.describe_rejections() and "ahead of this node's clock" in sync.last_error
    )
    clock.ns = T0 + 10**8
    assert [s.stamp_ns for s in feed(sync, set_messages(FRAMES, T0 + 10**8))] == [T0 + 10**8]
    # under use_sim_time the clock reads 0 until /clock arrives: stamps are not judged against it then
    unset = CameraSetSynchronizer(clock=FakeClock(0))
    assert len(feed(unset, set_messages(FRAMES, 5 * 10**9))) == 1 and unset.stats.future == 0


@pytest.mark.faults
def test_a_clock_jump_back_starts_the_synchroniser_over():
    clock = FakeClock(T0 + 10 * 10**9)
    sync = CameraSetSynchronizer(clock=clock)
    assert len(feed(sync, set_messages(FRAMES, T0 + 10 * 10**9))) == 1
    # a message a fraction of a second older is a late one, as before
    late = set_messages(FRAMES, T0 + 10 * 10**9 - 10**8)[0]
    assert sync.add(*late) is None and sync.stats.late == 1
    # the sender's clock steps back 9 s (replayed bag, restarted simulator): its sets are taken again
    clock.ns = T0 + 10**9
    assert [s.stamp_ns for s in feed(sync, set_messages(FRAMES, T0 + 10**9))] == [T0 + 10**9]
    assert sync.stats.clock_jumps == 1 and "clock jump x1" in sync.describe_rejections()


@pytest.mark.faults
def test_float_depth_bytes_labelled_16uc1_are_refused():
    """32FC1 bytes sent as 16UC1 with the float's step decoded to 0.01-65 m and were acted on."""
    clock = FakeClock(T0)
    sync = CameraSetSynchronizer(clock=clock)
    messages = set_messages(FRAMES, T0)
    for cam, kind, msg in messages:
        if (cam, kind) == ("front", "depth"):
            msg.encoding = "16UC1"  # step stays 4 x width: two uint16 per float
    assert feed(sync, messages) == [] and sync.stats.malformed == 1
    assert "at least twice a row" in sync.last_error
    # the same bytes with a consistent step decode, and the depth range gives them away
    wrong = FRAMES["front"].depth.astype(np.float32).view(np.uint16)[:, ::2].copy()
    messages = set_messages(FRAMES, T0 + 1)
    for cam, kind, msg in messages:
        if (cam, kind) == ("front", "depth"):
            msg.encoding, msg.step = "16UC1", 2 * msg.width
            msg.data = array.array("B", wrong.tobytes())
    assert feed(sync, messages) == [] and "outside the camera's" in sync.last_error


@pytest.mark.faults
def test_rejections_log_once_per_reason_and_period(caplog):
    from mirror_common.reasons import ReasonLog

    now = [0.0]
    reasons = ReasonLog(logging.getLogger("faults"), period=5.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="faults"):
        for i in range(50):
            reasons.record("malformed", f"image is {i}x{i}, expected 128x128")
        reasons.record("malformed", "encoding must be rgb8, got 'mono8'")  # a new kind shows at once
        reasons.record("future stamp", "11 days ahead")  # and so does a new reason
        now[0] = 6.0
        reasons.record("malformed", "image is 7x7, expected 128x128")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "rejected (malformed, 1 so far): image is 0x0, expected 128x128",
        "rejected (malformed, 51 so far): encoding must be rgb8, got 'mono8'",
        "rejected (future stamp, 1 so far): 11 days ahead",
        "rejected (malformed, 52 so far): image is 7x7, expected 128x128"
        " (+49 more like it since the last report)",
    ]
    assert reasons.count() == 53 and reasons.count("future stamp") == 1
    now[0] = 7.5
    assert reasons.describe() == (
        "malformed x52, 1.5 s ago: image is 7x7, expected 128x128; future stamp x1, 7.5 s ago: 11 days ahead"
    )


@pytest.mark.faults
def test_action_rejection_json_round_trip_and_validation():
    from sim_bridge.ros.status import ActionRejection

    answer = ActionRejection("busy", "busy (playing the demo); action rejected", 3, 12.5)
    assert ActionRejection.from_json(answer.to_json()) == answer
    for bad, match in [
        ('{"reason": "busy"}', "lacks"),
        ('{"reason": 1, "message": "", "episode": 3, "stamp": 1.0}', "'reason' must be str"),
        ('{"reason": "busy", "message": "", "episode": true, "stamp": 1.0}', "'episode' must be int"),
    ]:
        with pytest.raises(MessageError, match=match):
            ActionRejection.from_json(bad)


@pytest.mark.faults
def test_instructions_are_bounded_and_free_of_control_characters():
    from sim_bridge.ros.instructions import MAX_INSTRUCTION_CHARS, check_instruction, instruction_id

    assert check_instruction("  push the maroon button \n") == "push the maroon button"
    with pytest.raises(MessageError, match="1000000 characters refused"):
        check_instruction("x" * 1_000_000)
    with pytest.raises(MessageError, match=r"control characters \['U\+0000'\]"):
        check_instruction("push the\x00 maroon button")  # was silently cut at the NUL
    assert len(check_instruction("y" * MAX_INSTRUCTION_CHARS)) == MAX_INSTRUCTION_CHARS
    assert instruction_id("") == "" and len(instruction_id("push it")) == 12
    assert instruction_id("push it") == instruction_id("push it") != instruction_id("push it!")
