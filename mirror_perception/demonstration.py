"""From the frames of a whole demonstration to the recognised instruction: the one path that the live
``perception`` node, ``evaluate`` and training's held-out clips share, so that live and offline numbers
measure the same thing.

A demonstration is the video camera's frame of every control tick, from the pre-motion frame to the last:
what ``generate_demos`` stores and what the sim bridge streams (one camera set per tick). The decision uses
ViCLIP's test-time clip over the whole of it: the middle frame of each of ``clip_frames`` equal segments,
chosen **by frame index, not by time**. The bridge's ticks are not evenly spaced in wall time (path
planning and CPU load pause the stream), so the tick index is the only clock a stored demo and a live
stream share; a recording that loses frames therefore lands its clip on other phases of the motion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from .clip_sampling import sample_clip_indices
from .errors import InvalidVideoError
from .recognition import InstructionRecognizer

__all__ = [
    "FrameSource",
    "Frames",
    "demonstration_clip",
    "demonstration_clip_indices",
    "recognize_demonstration",
]


@runtime_checkable
class FrameSource(Protocol):
    """A video that loads its frames on demand (e.g. from disk), so only the clip's frames are read."""

    def __len__(self) -> int: ...

    def take(self, indices: Sequence[int]) -> np.ndarray:
        """``(len(indices), H, W, 3)`` uint8: the frames at ``indices``, in that order."""
        ...


Frames = np.ndarray | Sequence[np.ndarray] | FrameSource
"""A whole demonstration: a ``(T, H, W, 3)`` uint8 array, a list of ``(H, W, 3)`` uint8 frames, or a
:class:`FrameSource`."""


def demonstration_clip_indices(length: int, clip_frames: int) -> list[int]:
    """Indices of the frames that decide on a ``length``-frame demonstration (uniform segment middles)."""
    return sample_clip_indices(length, clip_frames, mode="uniform")


def _clip_from(frames: Frames, indices: list[int]) -> np.ndarray:
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4:
            raise InvalidVideoError(f"frames must be a (T>0, H, W, 3) video, got shape {frames.shape}")
        return frames[indices]
    if isinstance(frames, list | tuple):
        picked = [frames[i] for i in indices]
        if not all(isinstance(f, np.ndarray) for f in picked):
            kinds = sorted({type(f).__name__ for f in picked})
            raise InvalidVideoError(f"every frame must be a numpy array, got {kinds}")
        shapes = sorted({f.shape for f in picked})
        if len(shapes) != 1:
            raise InvalidVideoError(f"frames of one demonstration differ in shape: {shapes}")
        return np.stack(picked)
    if isinstance(frames, FrameSource):
        return np.asarray(frames.take(indices))
    raise InvalidVideoError(
        "frames must be a numpy array, a list of frames or a FrameSource, got " + type(frames).__name__
    )


def demonstration_clip(frames: Frames, clip_frames: int) -> np.ndarray:
    """``(clip_frames, H, W, 3)`` uint8: the clip a demonstration is recognised from (short demos repeat
    their last frame). Raises :class:`InvalidVideoError` for an empty or malformed video."""
    if not isinstance(frames, np.ndarray | list | tuple | FrameSource):
        raise InvalidVideoError(
            "frames must be a numpy array, a list of frames or a FrameSource, got " + type(frames).__name__
        )
    length = len(frames)
    if length == 0:
        raise InvalidVideoError("a demonstration needs at least one frame, got none")
    clip = _clip_from(frames, demonstration_clip_indices(length, clip_frames))
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise InvalidVideoError(f"frames must be (H, W, 3) RGB images, got a clip of shape {clip.shape}")
    if clip.dtype != np.uint8:
        raise InvalidVideoError(f"frames must be uint8 RGB, got {clip.dtype}")
    if min(clip.shape[1:3]) == 0:
        raise InvalidVideoError(f"frames have zero size: {clip.shape}")
    return clip


def recognize_demonstration(
    recognizer: InstructionRecognizer, frames: Frames, top_k: int = 5, probabilities: bool = False
) -> list[tuple[str, float]]:
    """The ``top_k`` (instruction, score) pairs a whole demonstration most likely shows, best first.

    Scores are cosine similarities (softmax probabilities at ViCLIP's temperature with
    ``probabilities=True``), from the clip :func:`demonstration_clip` picks.
    """
    clip = demonstration_clip(frames, recognizer.model.config.num_frames)
    return recognizer.recognize(clip, top_k=top_k, probabilities=probabilities)
