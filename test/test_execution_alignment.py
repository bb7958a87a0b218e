"""Alignment on rollouts split by outcome (paper Fig. 3): the recorder, the metric and evaluate's output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mirror_test_data import build_tiny_dataset, train_cli

from mirror.agent import MirrorAgent
from mirror.evaluation.evaluate import main as evaluate_main
from mirror.evaluation.execution_alignment import (
    ExecutionFeatureRecorder,
    ExecutionFeatures,
    outcome_alignment,
)
from mirror.evaluation.rollout import EpisodeOutcome, run_episode
from mirror.evaluation.seeds import environment_seed
from mirror.model import MirrorModel
from mirror.training.train_joint import main as train_main
from mirror_perception.demonstration import demonstration_clip


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "mirror"
    assert train_main(train_cli(build_tiny_dataset(), out, "--steps", "2")) == 0
    return out


def test_recorder_keeps_every_frame_and_each_keyframes_e(run: Path, bullet_env) -> None:
    agent = MirrorAgent.from_pretrained(run / "final")
    recorder = ExecutionFeatureRecorder("wrist")
    outcome = run_episode(
        bullet_env, agent, "push_buttons", 0, environment_seed(0, 5), 2, observers=[recorder]
    )
    assert len(recorder.embodied) == outcome.steps and len(recorder.frames) > outcome.steps
    features = recorder.features(agent)
    assert features.e.shape == (outcome.steps, agent.config.arp.embed_dim)
    clip = demonstration_clip(recorder.frames, agent.config.clip_frames)
    with torch.no_grad():
        u = agent.model.viclip.video_features(clip[None])[0].numpy()
    np.testing.assert_allclose(features.u, u, atol=1e-5)
    assert ExecutionFeatureRecorder("wrist").features(agent) is None  # never acted


def outcome(task: str, instruction: str, success: bool) -> EpisodeOutcome:
    return EpisodeOutcome(task, 0, instruction, 0, 0, 0, success=success, steps=2)


def test_outcome_alignment_splits_and_pairs_like_held_out_pairs(run: Path) -> None:
    agent = MirrorAgent(MirrorModel.from_pretrained(run / "final"))
    rng = np.random.default_rng(0)
    u_dim, e_dim = agent.model.alignment.u_dim, agent.model.alignment.e_dim
    outcomes = [outcome("a", "push red", True), outcome("a", "push blue", True), outcome("b", "open", False)]
    features = [ExecutionFeatures(rng.normal(size=u_dim), rng.normal(size=(2, e_dim))) for _ in outcomes]
    result = outcome_alignment(agent, outcomes, [*features[:2], None])
    assert result["succeeded"]["rollouts"] == 2 and result["succeeded"]["pairs"] == 4
    assert result["failed"] == {"rollouts": 0}  # the failed rollout never acted: no pairs
    for pairing in ("episode", "instruction", "class"):
        assert 0.0 <= result["succeeded"][pairing]["mean"] <= 1.0
    z_u, z_e = agent.aligned_embeddings(np.repeat(features[0].u[None], 2, axis=0), features[0].e)
    assert z_u.shape == z_e.shape == (2, agent.model.alignment.config.shared_dim)
    with pytest.raises(ValueError, match="outcomes"):
        outcome_alignment(agent, outcomes, features[:1])


@pytest.mark.slow  # a full joint step / evaluate with rollouts: seconds, kept out of the quick tier
def test_evaluate_reports_rollout_alignment_with_trained_and_probed_heads(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    argv = ["--checkpoints", str(run), "--out", str(out), "--episodes", "2", "--eval-seeds", "0",
            "--max-steps", "2", "--rollout-alignment", "--probe-steps", "2", "--no-progress"]  # fmt: skip
    assert evaluate_main(argv) == 0
    model = json.loads((out / "results.json").read_text())["models"]["mirror"]
    episodes = model["execution"]["episodes"]
    for key in ("rollout_alignment", "rollout_alignment_probe"):
        split = model[key]
        assert split["succeeded"]["rollouts"] + split["failed"]["rollouts"] == len(episodes)
        assert split["failed"]["rollouts"] == sum(not e["success"] for e in episodes)
