"""One pass over the held-out episodes that gathers what recognition and alignment need: the ranked
instructions of each video clip, and the aligned embeddings of (clip, keyframe observation) pairs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from mirror.agent import MirrorAgent
from mirror.evaluation.alignment_metrics import AlignmentPairs
from mirror.evaluation.episode_data import (
    EpisodeVideo,
    keyframes_and_seed,
    load_observations,
    policy_frames,
)
from mirror.evaluation.held_out import HeldOutEpisode
from mirror.evaluation.recognition import RecognitionRecord
from sim_bridge.actions import MAX_KEYFRAMES


def evaluate_held_out(
    agent: MirrorAgent,
    episodes: Sequence[HeldOutEpisode],
    recognition: bool = True,
    alignment: bool = True,
    top_k: int = 5,
    max_pairs_per_episode: int | None = None,
    progress: bool = True,
    description: str = "held-out",
) -> tuple[list[RecognitionRecord], AlignmentPairs | None, list[int]]:
    """Recognition records, alignment pairs (None when skipped) and the demo seeds seen (for the seed check).

    Each video is the model's video camera over the whole demo, recognised by ``MirrorAgent.recognize``:
    the path the live perception node takes (:mod:`mirror_perception.demonstration`), so offline and live
    recognition of the same demonstration agree. Each pair joins the demo clip's ``T_u u`` with ``T_e e``
    at one observation the policy acts from in the demo (frame 0, then each keyframe but the last;
    ``max_pairs_per_episode`` keeps the first ones).
    """
    config = agent.config
    vocabulary = list(config.instructions)
    cameras = list(agent.model.arp.config.cameras)
    records: list[RecognitionRecord] = []
    u_rows: list[np.ndarray] = []
    e_rows: list[np.ndarray] = []
    tasks: list[str] = []
    numbers: list[int] = []
    instructions: list[str] = []
    steps: list[int] = []
    seeds: list[int] = []
    for episode in tqdm(episodes, desc=description, unit="ep", disable=not progress):
        video = EpisodeVideo(episode.record, config.camera_for_video)
        if recognition:
            ranked = agent.recognize(video, top_k=top_k)
            records.append(
                RecognitionRecord(
                    episode.task, episode.episode, episode.variation, episode.instruction,
                    [(name, float(score)) for name, score in ranked], episode.instruction in vocabulary,
                )
            )  # fmt: skip
        if not alignment:
            continue
        keyframes, seed = keyframes_and_seed(episode)
        if seed is not None:
            seeds.append(seed)
        frames = policy_frames(keyframes, max_pairs_per_episode)
        u = agent.video_embedding(video)
        observations = load_observations(episode, [f for f, _ in frames], cameras)
        for observation, (_, step) in zip(observations, frames):
            _, e = agent.act(observation, episode.instruction, min(step, MAX_KEYFRAMES - 1))
            u_rows.append(u)
            e_rows.append(e)
            tasks.append(episode.task)
            numbers.append(episode.episode)
            instructions.append(episode.instruction)
            steps.append(step)
    pairs = None
    if alignment and u_rows:
        pairs = AlignmentPairs.project(
            agent, np.stack(u_rows), np.stack(e_rows), tasks, numbers, instructions, steps
        )
    return records, pairs, seeds
