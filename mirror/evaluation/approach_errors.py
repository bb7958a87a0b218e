"""Does the policy pick its first target from the scene and the instruction, or from where the arm is heading?

In a rollout the policy acts from rest: frame 0, then each keyframe it reached. PerAct's sample formation also
trains it from frames part of the way to the next keyframe, where the arm has already moved toward the target;
a policy can learn to follow that heading instead of finding the object. This acts at step 0 from frames at
``fractions`` of the way from frame 0 to the demo's first keyframe and measures how far the prediction lands
from that keyframe. A policy that finds the object is as right at fraction 0 as later; one that follows the
heading is at chance at 0 (several buttons, two taps) and right once the arm has moved.

One row per episode and fraction (``approach.csv``) and, per task and fraction, the share of first keyframes
more than 5 cm off with the arm's median travel so far (``approach_summary.csv``).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from mirror.agent import MirrorAgent
from mirror.evaluation.episode_data import demo_keyframes, load_observations
from mirror.evaluation.held_out import HeldOutEpisode

APPROACH_NAME = "approach.csv"
APPROACH_SUMMARY_NAME = "approach_summary.csv"
APPROACH_FRACTIONS: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5)
OTHER_OBJECT_CM = 5.0  # a first keyframe this far off is on another object where the scene has several
APPROACH_SUMMARY_COLUMNS = (
    "task", "fraction", "episodes", "moved_median_cm", "first_keyframe_beyond_5cm_pct",
)  # fmt: skip


@dataclass(frozen=True)
class ApproachError:
    """The step-0 prediction from one frame of the approach to the first keyframe."""

    task: str
    episode: int
    fraction: float  # of the way from frame 0 to the first keyframe, in frames
    frame: int
    moved_cm: float  # gripper travel from frame 0 to this frame
    position_cm: float  # predicted position to the first keyframe's


def approach_errors(
    agent: MirrorAgent,
    episodes: Sequence[HeldOutEpisode],
    fractions: Sequence[float] = APPROACH_FRACTIONS,
    progress: bool = True,
) -> list[ApproachError]:
    """Act at step 0 from each fraction's frame of every episode (see the module docstring)."""
    if not fractions or any(not 0.0 <= f < 1.0 for f in fractions):
        raise ValueError(f"fractions must lie in [0, 1), got {list(fractions)}")
    cameras = list(agent.model.arp.config.cameras)
    errors: list[ApproachError] = []
    for episode in tqdm(episodes, desc="approach", unit="ep", disable=not progress):
        low_dim, keyframes = demo_keyframes(episode)
        first = keyframes[0]
        frames = [int(round(f * first)) for f in fractions]
        observations = load_observations(episode, sorted(set(frames)), cameras)
        by_frame = dict(zip(sorted(set(frames)), observations))
        start, target = (np.asarray(low_dim[f].gripper_pose[:3], dtype=np.float64) for f in (0, first))
        for fraction, frame in zip(fractions, frames):
            observation = by_frame[frame]
            action, _ = agent.act(observation, episode.instruction, 0)
            errors.append(
                ApproachError(
                    task=episode.task,
                    episode=episode.episode,
                    fraction=float(fraction),
                    frame=frame,
                    moved_cm=100.0 * float(np.linalg.norm(np.asarray(observation.gripper_pose[:3]) - start)),
                    position_cm=100.0 * float(np.linalg.norm(action.position - target)),
                )
            )
    return errors


def summarise_approach(errors: Sequence[ApproachError]) -> list[dict[str, float | int | str]]:
    """Per task and fraction: episodes, median travel and the share of first keyframes beyond 5 cm."""
    groups: dict[tuple[str, float], list[ApproachError]] = {}
    for error in errors:
        groups.setdefault((error.task, error.fraction), []).append(error)
    return [
        dict(
            zip(
                APPROACH_SUMMARY_COLUMNS,
                (
                    task,
                    fraction,
                    len(group),
                    statistics.median(e.moved_cm for e in group),
                    100.0 * sum(e.position_cm > OTHER_OBJECT_CM for e in group) / len(group),
                ),
            )
        )
        for (task, fraction), group in sorted(groups.items())
    ]
