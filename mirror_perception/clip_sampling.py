"""Which frames of a video make an 8-frame clip: ViCLIP/InternVideo segment sampling."""

from __future__ import annotations

import numpy as np


def sample_clip_indices(
    num_frames_in_video: int,
    num_frames: int = 8,
    mode: str = "uniform",
    rng: np.random.Generator | None = None,
) -> list[int]:
    """Frame indices of one clip: cut the video into `num_frames` equal segments, take one frame from each.

    - `uniform` (evaluation): the middle frame of every segment, deterministic.
    - `random` (training): a uniformly random frame inside every segment, from `rng`.
    Segments are `[floor(i*n/k), floor((i+1)*n/k))`. A video shorter than `num_frames` yields all of its
    frames, padded at the end by repeating the last one, as InternVideo does. (InternVideo's random mode
    never draws the last frame of a segment, an off-by-one we do not copy.)
    """
    if not isinstance(num_frames_in_video, int | np.integer) or num_frames_in_video < 1:
        raise ValueError(f"num_frames_in_video must be a positive int, got {num_frames_in_video!r}")
    if not isinstance(num_frames, int | np.integer) or num_frames < 1:
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    if mode not in ("uniform", "random"):
        raise ValueError(f"mode must be 'uniform' or 'random', got {mode!r}")
    segments = min(num_frames, int(num_frames_in_video))
    bounds = (np.arange(segments + 1) * num_frames_in_video) // segments
    starts, ends = bounds[:-1], bounds[1:]
    if mode == "uniform":
        picked = (starts + ends - 1) // 2
    else:
        rng = rng if rng is not None else np.random.default_rng()
        picked = rng.integers(starts, ends)
    indices = [int(i) for i in picked]
    return indices + [indices[-1]] * (num_frames - len(indices))
