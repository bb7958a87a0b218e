"""Demo generation end to end: RLBench layout on disk, exact read-back, keyframes, resumption."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from sim_bridge.dataset import RLBenchDataset, discover_keyframes, load_episode
from sim_bridge.dataset.layout import WAYPOINTS_KEY
from sim_bridge.scripts import generate_demos
from sim_bridge.scripts.generate_demos import record_episode, save_episode


def test_written_episode_reads_back_identically(bullet_env, tmp_path):
    episode = record_episode(bullet_env, "push_buttons", 1, seed=21)
    directory = tmp_path / "push_buttons" / "all_variations" / "episodes" / "episode0"
    save_episode(directory, episode)

    loaded = load_episode(directory)
    assert loaded.descriptions == episode.info.descriptions
    assert loaded.variation == 1 and len(loaded.observations) == len(episode.frames)
    for original, read in zip(episode.frames, loaded.observations, strict=True):
        assert np.array_equal(original.gripper_pose, read.gripper_pose)
        assert np.array_equal(original.joint_positions, read.joint_positions)
        assert original.gripper_open == read.gripper_open
        for name, cam in original.cameras.items():
            back = read.cameras[name]
            assert np.array_equal(cam.rgb, back.rgb)
            assert np.array_equal(cam.mask, back.mask)
            # 24-bit depth: quantisation step (far - near) / 2^24 < 0.3 micrometres.
            assert np.max(np.abs(cam.depth - back.depth)) < 1e-5
            assert np.allclose(cam.extrinsics, back.extrinsics) and np.allclose(
                cam.intrinsics, back.intrinsics
            )
    # PerAct's keyframe heuristic finds exactly the scripted waypoints.
    assert discover_keyframes(loaded.observations) == episode.waypoint_frames


@pytest.mark.slow  # records several demonstrations twice
def test_cli_writes_resumes_and_reports(tmp_path, capsys):
    args = [
        "--tasks",
        "push_buttons",
        "--variations",
        "0,2",
        "--episodes-per-variation",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert generate_demos.main(args) == 0
    dataset = RLBenchDataset(tmp_path)
    records = dataset.episodes("push_buttons")
    assert len(records) == 2 and sorted(r.variation for r in records) == [0, 2]
    first = load_episode(records[0], cameras=("front",))
    assert discover_keyframes(first.observations) == first.observations[0].extra_misc[WAYPOINTS_KEY]

    # Simulate an interruption: one episode lost, plus a half-written temporary folder.
    episodes = tmp_path / "push_buttons" / "all_variations" / "episodes"
    victim = sorted(episodes.glob("episode*"))[0]
    stamp = {p.name: p.stat().st_mtime_ns for p in episodes.glob("episode*")}
    shutil.rmtree(victim)
    (episodes / ".episode0.tmp-999999-abc").mkdir()
    assert generate_demos.main(args) == 0
    after = {p.name: p.stat().st_mtime_ns for p in episodes.glob("episode*")}
    assert set(after) == set(stamp)
    untouched = [n for n in after if n != victim.name]
    assert all(after[n] == stamp[n] for n in untouched)  # complete episodes are not rewritten
    assert not list(episodes.glob(".episode*"))  # the stale temp folder of a dead process is gone


def test_cli_rejects_bad_names(tmp_path):
    with pytest.raises(SystemExit):
        generate_demos.main(["--tasks", "not_a_task", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="variations 0..49"):
        generate_demos.main(["--tasks", "push_buttons", "--variations", "77", "--out", str(tmp_path)])
