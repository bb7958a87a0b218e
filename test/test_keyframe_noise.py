"""The keyframe-noise diagnostic: perturbation statistics, the summary table, and a real noisy replay."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from sim_bridge.actions import KeyframeAction
from sim_bridge.scripts import keyframe_noise
from sim_bridge.scripts.keyframe_noise import NoiseLevel, NoisyEpisode, perturb, run_noisy_episode, summarize


def _action() -> KeyframeAction:
    return KeyframeAction(np.array([0.2, 0.1, 0.9]), np.array([1.0, 0.0, 0.0, 0.0]), False, True)


def test_zero_noise_leaves_the_action_unchanged():
    out = perturb(_action(), NoiseLevel(0.0, 0.0), np.random.default_rng(0))
    assert np.allclose(out.position, _action().position)
    assert Rotation.from_quat(out.quaternion).inv() * Rotation.from_quat(_action().quaternion)
    assert (out.gripper_open, out.ignore_collisions) == (False, True)


def test_noise_has_the_requested_scale():
    rng = np.random.default_rng(1)
    outs = [perturb(_action(), NoiseLevel(2.0, 10.0), rng) for _ in range(2000)]
    offsets = np.stack([o.position - _action().position for o in outs])
    assert np.allclose(offsets.std(axis=0), 0.02, rtol=0.1)
    angles = [(Rotation.from_quat(o.quaternion) * Rotation.from_quat(_action().quaternion).inv()).magnitude()
              for o in outs]  # fmt: skip
    # |N(0, s I_3)| has RMS s * sqrt(3).
    assert np.sqrt(np.mean(np.square(angles))) == pytest.approx(np.radians(10.0) * np.sqrt(3), rel=0.1)


def test_negative_noise_is_refused():
    with pytest.raises(ValueError, match=">= 0"):
        NoiseLevel(-1.0, 0.0)


def _episode(task: str, pos: float, success: bool, category: str = "") -> NoisyEpisode:
    return NoisyEpisode(task, 0, 1, pos, 5.0, success, category, "" if success else "why", 3)


def test_summary_counts_failures_per_category():
    rows = summarize([
        _episode("a", 0.5, True), _episode("a", 0.5, False, "planning"), _episode("a", 0.5, False, "task"),
        _episode("a", 1.0, False, "task"), _episode("b", 0.5, True),
    ])  # fmt: skip
    by_key = {(r["task"], r["position_cm"]): r for r in rows}
    assert by_key[("a", 0.5)]["successes"] == 1 and by_key[("a", 0.5)]["episodes"] == 3
    assert by_key[("a", 0.5)]["failed_planning"] == 1 and by_key[("a", 0.5)]["failed_task"] == 1
    assert by_key[("a", 1.0)]["success_rate"] == 0.0
    assert by_key[("b", 0.5)]["success_rate"] == 1.0


def test_noisy_drawer_grasp_is_not_refused_by_the_planner(bullet_env):
    """A 0.5 cm / 5 degree error on the drawer grasp puts the wrist ~5 mm into the drawer front: before the
    planner tolerated intended contacts this failed with "target configuration collides with ['object 3']"."""
    episode = run_noisy_episode(bullet_env, "open_drawer", 0, 5368709120, NoiseLevel(0.5, 5.0))
    assert episode.category != "planning", episode.reason
    assert episode.success, episode.reason


def test_cli_writes_the_summary_and_failures(tmp_path):
    out = tmp_path / "noise"
    assert keyframe_noise.main(["--tasks", "push_buttons", "--episodes", "1", "--levels", "0:0", "--out",
                                str(out)]) == 0  # fmt: skip
    with (out / "noise_summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["task"] == "push_buttons" and rows[0]["successes"] == "1"
    assert (out / "noise_failures.csv").exists()


def test_cli_refuses_bad_levels_and_tasks(capsys):
    with pytest.raises(SystemExit):
        keyframe_noise.main(["--tasks", "push_buttons", "--levels", "1:x"])
    with pytest.raises(SystemExit):
        keyframe_noise.main(["--tasks", "no_such_task"])
    assert "no_such_task" in capsys.readouterr().err
