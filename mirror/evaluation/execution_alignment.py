"""Alignment on rollouts, split by outcome (paper Fig. 3: does alignment go with success?).

During a rollout, :class:`ExecutionFeatureRecorder` keeps what the two halves of the model make of the same
execution: ViCLIP's u of the video camera's frames (the model watching itself act, picked like a held-out
demonstration's clip) and ARP's e at every keyframe. :func:`outcome_alignment` pairs them per rollout, as
held-out pairs are paired (one clip, each keyframe's e), projects them through a model's heads and reports
Recall@1 under every positive-pair definition, separately over the rollouts that succeeded and those that
failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mirror.agent import MirrorAgent
from mirror.evaluation.alignment_metrics import AlignmentPairs, alignment_metrics
from mirror.evaluation.rollout import EpisodeOutcome, RolloutObserver
from sim_bridge.actions import KeyframeAction
from sim_bridge.backend import EpisodeInfo
from sim_bridge.observation import Observation

MIN_PAIRS = 2  # Recall@1 over fewer pairs is meaningless


@dataclass
class ExecutionFeatures:
    """One rollout's raw features: u ``(viclip.embed_dim,)`` and e ``(keyframes, arp.embed_dim)``."""

    u: np.ndarray
    e: np.ndarray


class ExecutionFeatureRecorder(RolloutObserver):
    """Collects the video camera's frames and the policy's e of one rollout (see the module docstring)."""

    wants_frames = True

    def __init__(self, camera: str) -> None:
        self.camera = camera
        self.frames: list[np.ndarray] = []
        self.embodied: list[np.ndarray] = []

    def on_start(self, info: EpisodeInfo, observation: Observation) -> None:
        self.frames.append(observation.camera(self.camera).rgb)

    def on_frame(self, observation: Observation) -> None:
        self.frames.append(observation.camera(self.camera).rgb)

    def on_keyframe(
        self, step: int, observation: Observation, action: KeyframeAction, e: np.ndarray | None = None
    ) -> None:
        if e is not None:
            self.embodied.append(np.asarray(e, dtype=np.float32))

    def features(self, agent: MirrorAgent) -> ExecutionFeatures | None:
        """u of the whole execution and the e of every keyframe; None when the policy never acted."""
        if not self.embodied:
            return None
        return ExecutionFeatures(agent.video_embedding(self.frames), np.stack(self.embodied))


def outcome_alignment(
    agent: MirrorAgent, outcomes: Sequence[EpisodeOutcome], features: Sequence[ExecutionFeatures | None]
) -> dict:
    """Recall@1 through ``agent``'s heads over the rollouts that succeeded and over those that failed
    (``alignment_metrics`` of each subset, with its ``rollouts``; a subset of fewer than 2 pairs has none)."""
    if len(outcomes) != len(features):
        raise ValueError(f"{len(outcomes)} outcomes but {len(features)} feature sets")
    out = {}
    for label, success in (("succeeded", True), ("failed", False)):
        chosen = [(i, o, f) for i, (o, f) in enumerate(zip(outcomes, features)) if o.success == success and f]
        pairs = _pairs(agent, chosen)
        entry = {"rollouts": len(chosen)}
        if pairs is not None and len(pairs) >= MIN_PAIRS:
            entry.update(alignment_metrics(pairs))
        out[label] = entry
    return out


def _pairs(
    agent: MirrorAgent, chosen: Sequence[tuple[int, EpisodeOutcome, ExecutionFeatures]]
) -> AlignmentPairs | None:
    """One pair per keyframe of each rollout: the rollout's u with that keyframe's e."""
    if not chosen:
        return None
    u, e, tasks, episodes, instructions, steps = [], [], [], [], [], []
    for index, outcome, feature in chosen:
        for step, embodied in enumerate(feature.e):
            u.append(feature.u)
            e.append(embodied)
            tasks.append(outcome.task)
            episodes.append(index)  # a rollout is an episode of its own
            instructions.append(outcome.instruction)
            steps.append(step)
    return AlignmentPairs.project(agent, np.stack(u), np.stack(e), tasks, episodes, instructions, steps)
