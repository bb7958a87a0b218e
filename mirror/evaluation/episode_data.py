"""What the held-out metrics read from an episode on disk: the video camera's demonstration (decoded lazily,
for the clip recognition picks), the keyframes, the observations the policy acts from, and the seed the demo
was generated with."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mirror.evaluation.held_out import HeldOutEpisode
from sim_bridge.dataset import EpisodeRecord, discover_keyframes, load_episode
from sim_bridge.dataset.layout import SEED_KEY
from sim_bridge.errors import DatasetError
from sim_bridge.observation import Observation


class EpisodeVideo:
    """One camera's video of a stored episode as a :class:`~mirror_perception.demonstration.FrameSource`:
    every frame of the demo counts, but only those a clip needs are decoded (once: recognition and the video
    embedding ask for the same clip)."""

    def __init__(self, record: EpisodeRecord, camera: str) -> None:
        self.record = record
        self.camera = camera
        self._taken: dict[tuple[int, ...], np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.record.length)

    def take(self, indices: Sequence[int]) -> np.ndarray:
        key = tuple(int(i) for i in indices)
        if key not in self._taken:
            loaded = load_episode(self.record, cameras=[self.camera], frames=key)
            self._taken[key] = np.stack([obs.camera(self.camera).rgb for obs in loaded.observations])
        return self._taken[key]


def demo_keyframes(episode: HeldOutEpisode) -> tuple[list[Observation], list[int]]:
    """Every frame of the demo without images (gripper poses, seed) and its PerAct keyframes: one read."""
    low_dim = load_episode(episode.record, cameras=[])
    keyframes = discover_keyframes(low_dim.observations)
    if not keyframes:
        raise DatasetError(f"{episode.record.path} has no keyframes ({low_dim.length} frames)")
    return low_dim.observations, keyframes


def keyframes_and_seed(episode: HeldOutEpisode) -> tuple[list[int], int | None]:
    """PerAct keyframes of the demo and the simulator seed it was generated from (None for foreign data)."""
    low_dim, keyframes = demo_keyframes(episode)
    seed = low_dim[0].extra_misc.get(SEED_KEY) if low_dim else None
    return keyframes, (int(seed) if seed is not None else None)


def policy_frames(keyframes: Sequence[int], limit: int | None = None) -> list[tuple[int, int]]:
    """``(frame, keyframe step)`` of the observations the policy acts from in a demo: frame 0 at step 0,
    then every keyframe but the last (after it the task is done), as in ARP's keyframe transitions."""
    frames = [0, *keyframes[:-1]]
    pairs = [(frame, step) for step, frame in enumerate(frames)]
    return pairs if limit is None else pairs[: max(limit, 0)]


def load_observations(
    episode: HeldOutEpisode, frames: Sequence[int], cameras: Sequence[str]
) -> list[Observation]:
    return load_episode(episode.record, cameras=list(cameras), frames=list(frames)).observations
