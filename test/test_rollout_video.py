"""Seeing failures: annotated GIFs of rollouts (``evaluate --videos``) and of mirror-loop episodes, and the
point clouds of rollout steps (``evaluate --point-clouds``, written only where open3d is installed).

The drawing and encoding are checked on synthetic frames (marker position against the projection, caption and
banner pixels, frame counts and durations of the written GIF); ``evaluate --videos`` runs for real on a tiny
untrained model in the embedded simulator (64x64 cameras, 1 rollout of at most 2 keyframes).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mirror.evaluation.evaluate import main as evaluate_main
from mirror.evaluation.rollout_point_cloud import (
    MARKER_POINTS,
    MARKER_RADIUS,
    PointCloudExportError,
    fused_point_cloud,
    keyframe_points,
    require_open3d,
)
from mirror.evaluation.rollout_video import (
    CLOSED_COLOR,
    FAILURE_COLOR,
    HOLD_MS,
    AnnotatedVideo,
    Banner,
    KeyframeMarker,
    outcome_banner,
    render_frame,
    rollout_video_name,
    save_gif,
)
from mirror.model import MirrorModel
from mirror.ros.episode_outputs import EpisodeVideo, episode_metadata, episode_stem
from mirror.ros.policy_messages import PolicyActionInfo
from mirror.ros.task_selection import EpisodePlan, TaskVariation
from mirror_common.outputs import OutputDirectoryError, prepare_output_directory
from mirror_perception.ros.recognized_action import RecognizedAction
from sim_bridge.actions import KeyframeAction
from sim_bridge.cameras import RLBENCH_CAMERAS, depth_to_world_points, look_at_extrinsics
from sim_bridge.observation import CameraFrame
from sim_bridge.ros.instructions import instruction_id
from sim_bridge.ros.status import EpisodeStatus
from sim_bridge.tasks import make_task

REPO = Path(__file__).resolve().parents[1]
SIZE = 32
SCALE = 3


def front_frame(value: int = 90, size: int = SIZE) -> CameraFrame:
    """A flat grey image with the front camera's real calibration and a plane 1.5 m away."""
    spec = RLBENCH_CAMERAS["front"]
    extrinsics = look_at_extrinsics(np.array(spec.position), np.array(spec.axis))
    rgb = np.full((size, size, 3), value, np.uint8)
    depth = np.full((size, size), 1.5, np.float32)
    return CameraFrame(
        rgb, depth, np.zeros((size, size), np.int32), spec.intrinsics(size), extrinsics, 0.01, 4.5
    )


def pixel(image: Image.Image, x: float, y: float) -> tuple[int, ...]:
    return image.getpixel((int(x), int(y)))


def test_keyframe_marker_lands_on_the_pixel_whose_depth_point_it_is():
    frame = front_frame()
    v, u = 20, 7
    world = depth_to_world_points(frame.depth, frame.intrinsics, frame.extrinsics)[v, u]
    closed = KeyframeMarker(tuple(world), "3", gripper_open=False)
    image = render_frame(frame.rgb, frame.intrinsics, frame.extrinsics, markers=[closed], scale=SCALE)
    assert image.size == (SIZE * SCALE, SIZE * SCALE)
    centre = ((u + 0.5) * SCALE, (v + 0.5) * SCALE)
    assert pixel(image, *centre) != (90, 90, 90)  # the newest marker is filled at its pixel
    assert pixel(image, centre[0] + 3 * SCALE, centre[1] + 3 * SCALE) == (90, 90, 90)  # and small
    plain = render_frame(frame.rgb, frame.intrinsics, frame.extrinsics, scale=SCALE)
    assert np.all(np.asarray(plain) == 90)  # nothing drawn without annotations: upscaled with nearest


def test_caption_banner_and_off_image_markers_change_pixels_where_expected():
    frame = front_frame()
    behind = KeyframeMarker((5.0, 0.0, 1.58), "0")  # behind the camera: drawn on an edge, not lost
    image = render_frame(
        frame.rgb, frame.intrinsics, frame.extrinsics, caption=["push the maroon button"], markers=[behind],
        banner=Banner("FAILURE: planning failed", False), scale=SCALE,
    )  # fmt: skip
    array = np.asarray(image).astype(int)
    top, bottom, middle = array[:4], array[-4:], array[SIZE * SCALE // 2]
    assert np.all(top < 90) and np.any(array[: SIZE * SCALE // 4] > 200)  # dark band with white text
    red = np.array(FAILURE_COLOR)
    assert np.abs(bottom - red).sum(-1).min() < 120 and bottom[..., 0].mean() > bottom[..., 1].mean()
    assert np.sum(np.any(np.asarray(image) != 90, axis=-1)) > np.sum(np.any(middle != 90, axis=-1))
    assert np.any(np.any(array != 90, axis=-1)[:, [0, -1]]) or np.any(np.any(array != 90, axis=-1)[[0, -1]])
    with pytest.raises(ValueError, match="uint8"):
        render_frame(frame.depth, frame.intrinsics, frame.extrinsics)


def test_video_keeps_every_second_frame_merges_still_ones_and_thins_when_full(tmp_path):
    video = AnnotatedVideo(scale=2, every=2, frame_ms=50, max_frames=8)
    video.caption = ["step 0"]
    kept = [video.add(front_frame(10 * i)) for i in range(6)]
    assert kept == [True, False, True, False, True, False] and len(video) == 3
    assert video.durations_ms == [100, 100, 100]  # a kept frame lasts as long as the frames it stands for
    assert (
        video.add(front_frame(40)) and len(video) == 3
    )  # the same picture as the last kept one: held longer
    assert video.durations_ms == [100, 100, 150]
    video.markers.append(KeyframeMarker.of(0, [0.2, 0.0, 1.0, 0, 0, 0, 1, 1.0, 0.0]))
    assert video.add(front_frame(40), force=True) and len(video) == 4  # same image, new marker: a new frame
    for i in range(40):  # beyond max_frames: the rate halves, the GIF still plays in real time
        video.add(front_frame(100 + i))
    assert len(video) < 8 and video.every == 8 and sum(video.durations_ms) == 48 * 50
    video.finish(outcome_banner(False, 2, "planning_error", "step 1: PlanningError: unreachable"))
    assert video.durations_ms[-1] == HOLD_MS
    path = video.save(tmp_path / "nested" / "v.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == len(video)
        durations = []
        for i in range(gif.n_frames):
            gif.seek(i)
            durations.append(gif.info["duration"])
        last = np.asarray(gif.convert("RGB"))
    assert durations == video.durations_ms
    assert last[-3:, :, 0].mean() > last[-3:, :, 1].mean() + 50  # the red failure banner on the held frame
    assert not list(tmp_path.rglob("*.part"))
    with pytest.raises(ValueError, match="no frames"):
        AnnotatedVideo().save(tmp_path / "empty.gif")
    with pytest.raises(ValueError, match="durations"):
        save_gif(video.render(), [100], tmp_path / "x.gif")


def test_output_directories_are_created_or_refused_clearly(tmp_path):
    made = prepare_output_directory(tmp_path / "a" / "b", "video directory")
    assert made.is_dir() and made.is_absolute()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputDirectoryError, match="exists and is not a directory"):
        prepare_output_directory(tmp_path / "file", "video directory")
    with pytest.raises(OutputDirectoryError, match="cannot create"):
        prepare_output_directory(tmp_path / "file" / "sub", "video directory")


def _plan() -> EpisodePlan:
    return EpisodePlan(0, TaskVariation("push_buttons", 0, "push the maroon button"), 11, 12)


def _status(episode: int, state: str, stamp: float, step: int = 0, reason: str = "") -> EpisodeStatus:
    return EpisodeStatus(
        "push_buttons", 0, "push the maroon button", 11, episode, step, state, reason, False, stamp
    )


def test_mirror_loop_episode_video_follows_both_phases_and_ignores_other_episodes(tmp_path):
    plan = _plan()
    film = EpisodeVideo(plan, 3, AnnotatedVideo(scale=2, every=1))
    assert not film.on_camera(1, front_frame())  # nothing before the demo starts
    film.start_demo(_status(5, "running", stamp=10.0))
    assert not film.on_camera(9_000_000_000, front_frame(1))  # the previous scene's frame
    assert film.on_camera(10_100_000_000, front_frame(2))
    film.on_recognition(RecognizedAction("push the red button", 0.3, episode=4))  # another episode
    assert not any("recognized" in line or "live" in line for line in film.video.caption)
    film.on_recognition(RecognizedAction("push the maroon button", 0.41, final=True, frames=80, episode=5))
    assert film.video.caption[0] == "episode 1/3: push_buttons variation 0 [demo]"
    assert "recognized 'push the maroon button' (0.41, correct, 80 frames)" in film.video.caption
    film.start_policy(_status(6, "running", stamp=20.0), "push the maroon button")
    assert not film.on_camera(15_000_000_000, front_frame(3))
    action = [0.3, 0.1, 0.8, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    film.on_action(
        PolicyActionInfo(5, 0, instruction_id("x"), True, action, 10.0, 20.0, 1.0)
    )  # the demo episode: ignored
    film.on_action(PolicyActionInfo(6, 0, instruction_id("push the maroon"), True, action, 12.0, 20.0, 21.0))
    assert film.video.markers == [KeyframeMarker((0.3, 0.1, 0.8), "0", gripper_open=False)]
    assert film.on_camera(21_000_000_000, front_frame(4))
    film.on_status(_status(6, "failure", 22.0, step=1, reason="planning failed: unreachable"))
    assert film.video.caption[-1] == "1 keyframe(s) executed, failure"
    assert "policy acts on 'push the maroon button'" in film.video.caption
    film.finish("failure", "planning failed: unreachable")
    path = film.save(tmp_path, "failure")
    assert path.name == "ep001_push_buttons_v0_failure.gif" and episode_stem(plan) == "ep001_push_buttons_v0"
    with Image.open(path) as gif:
        assert gif.n_frames == 3  # demo frame, policy frame, held final frame
    assert episode_metadata(plan)["policy_seed"] == 12


# -- evaluate --videos ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    task = make_task("push_buttons")
    names = list(dict.fromkeys(task.descriptions(v)[0] for v in range(4)))
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny"
    MirrorModel.from_names(instructions=names, arp_overrides={"camera_resolution": 64}).save_pretrained(path)
    return path


def test_evaluate_videos_writes_one_annotated_gif_per_rollout(tiny_checkpoint, tmp_path, one_torch_thread):
    out = tmp_path / "eval"
    argv = ["--checkpoints", str(tiny_checkpoint), "--names", "tiny", "--out", str(out), "--tasks",
            "push_buttons", "--episodes", "1", "--max-steps", "2", "--eval-seeds", "0", "--skip-recognition",
            "--skip-alignment", "--no-progress"]  # fmt: skip
    assert evaluate_main([*argv, "--videos"]) == 0
    results = json.loads((out / "results.json").read_text())
    (episode,) = results["models"]["tiny"]["execution"]["episodes"]
    name = rollout_video_name("push_buttons", 0, 0, episode["success"])
    assert episode["video"] == str(out / "videos" / "tiny" / name)
    assert results["files"]["videos_tiny"] == "videos/tiny"  # relative to the results folder
    assert sorted(p.name for p in (out / "videos" / "tiny").iterdir()) == [name]
    with Image.open(episode["video"]) as gif:
        assert gif.size == (64 * 3, 64 * 3)
        assert gif.n_frames >= 3 if episode["steps"] and episode["failure"] != "invalid_action" else 2
        gif.seek(gif.n_frames - 1)
        assert gif.info["duration"] == HOLD_MS
        last = np.asarray(gif.convert("RGB")).astype(int)
    banner = last[-3:].reshape(-1, 3).mean(0)
    assert (banner[1] > banner[0]) == episode["success"]  # green for success, red for failure

    file_in_the_way = tmp_path / "blocked"
    (file_in_the_way / "videos").mkdir(parents=True)
    (file_in_the_way / "videos" / "tiny").write_text("not a directory")
    argv[argv.index(str(out))] = str(file_in_the_way)
    assert evaluate_main([*argv, "--videos"]) == 2
    assert not (file_in_the_way / "results.json").exists()
    with pytest.raises(SystemExit):
        evaluate_main([*argv, "--videos", "--skip-rollouts"])


def test_bringup_refuses_a_videos_or_record_path_that_is_a_file(tmp_path):
    blocker = tmp_path / "file.gif"
    blocker.write_text("x")
    for option in ("--videos", "--record"):
        result = subprocess.run(
            [sys.executable, "-m", "mirror.ros.bringup", option, str(blocker)],
            capture_output=True, text=True, timeout=60, cwd=REPO,
        )  # fmt: skip
        assert result.returncode == 2, result.stdout
        assert f"--{option[2:]} directory {blocker} exists and is not a directory" in result.stdout
        assert "started" not in result.stdout


# -- evaluate --point-clouds ---------------------------------------------------------------------------------


def _open3d_available() -> bool:
    try:
        import open3d  # noqa: F401
    except ImportError:
        return False
    return True


def test_point_cloud_is_what_the_policy_sees_plus_the_keyframe(tiny_checkpoint, bullet_env):
    config = MirrorModel.read_config(tiny_checkpoint)[0].arp
    config = dataclasses.replace(config, camera_resolution=128)
    _, observation = bullet_env.reset("push_buttons", 0, 3)
    points, colours = fused_point_cloud(observation, config)
    low, high = np.array(config.scene_bounds[:3]), np.array(config.scene_bounds[3:])
    assert 1000 < len(points) <= len(config.cameras) * (128 // config.point_stride) ** 2
    assert np.all((points >= low) & (points <= high)) and np.all((colours >= 0) & (colours <= 1))
    action = KeyframeAction(np.array([0.2, 0.1, 0.9]), np.array([0.0, 1.0, 0.0, 0.0]), gripper_open=False)
    marker, marker_colours = keyframe_points(action)
    distances = np.linalg.norm(marker - action.position, axis=1)
    assert np.allclose(distances[:MARKER_POINTS], MARKER_RADIUS) and distances.max() == pytest.approx(0.05)
    z_axis = marker[-1] - action.position  # the last axis drawn is the target's z: 180 deg about y flips it
    np.testing.assert_allclose(z_axis, [0.0, 0.0, -0.05], atol=1e-9)
    np.testing.assert_allclose(marker_colours[0], np.array(CLOSED_COLOR) / 255)


@pytest.mark.skipif(_open3d_available(), reason="open3d is installed")
def test_point_clouds_without_open3d_fail_at_once_saying_how_to_install_it(tiny_checkpoint, tmp_path, caplog):
    with pytest.raises(PointCloudExportError, match=r"pip install -e '\.\[pointcloud\]'"):
        require_open3d()
    argv = ["--checkpoints", str(tiny_checkpoint), "--out", str(tmp_path), "--tasks", "push_buttons",
            "--skip-recognition", "--skip-alignment", "--point-clouds"]  # fmt: skip
    with caplog.at_level("ERROR"):
        assert evaluate_main(argv) == 2
    assert "open3d" in caplog.text and not (tmp_path / "results.json").exists()


def test_evaluate_point_clouds_writes_one_ply_per_keyframe_step(tiny_checkpoint, tmp_path, one_torch_thread):
    o3d = pytest.importorskip("open3d")
    out = tmp_path / "eval"
    argv = ["--checkpoints", str(tiny_checkpoint), "--names", "tiny", "--out", str(out), "--tasks",
            "push_buttons", "--episodes", "1", "--max-steps", "2", "--eval-seeds", "0", "--skip-recognition",
            "--skip-alignment", "--no-progress", "--point-clouds"]  # fmt: skip
    assert evaluate_main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    (episode,) = results["models"]["tiny"]["execution"]["episodes"]
    expected = [
        out / "point_clouds" / "tiny" / f"push_buttons_seed0_ep0_step{k}.ply" for k in range(episode["steps"])
    ]
    if episode["failure"] == "invalid_action":  # a malformed prediction is never shown
        expected = expected[:-1]
    assert episode["point_clouds"] == [str(p) for p in expected]
    assert sorted((out / "point_clouds" / "tiny").iterdir()) == sorted(expected)
    cloud = o3d.io.read_point_cloud(str(expected[0]))
    points, colours = np.asarray(cloud.points), np.asarray(cloud.colors)
    assert len(points) > MARKER_POINTS + 3 * 25 and colours.shape == points.shape
    marker = points[-(MARKER_POINTS + 3 * 25) :]  # the keyframe comes last: its sphere centre is the target
    assert np.linalg.norm(marker[:MARKER_POINTS].mean(0) - marker[MARKER_POINTS]) < 1e-3
