"""Front-camera frames for recognition: a sliding window of the last seconds, and the whole demonstration.

ROS-free. Frames carry the bridge's stamps (integer nanoseconds). The window keeps the frames of the last
``window`` seconds of stream time, so its length follows the incoming rate (about 4 s x 20 Hz while the arm
moves). A demonstration recording starts at the stamp of the ``demo`` status and ends at the stamp of the
status that ends it: frames that arrived just before the status (the topics are independent) are taken from
the window, late frames up to the end stamp are still accepted. The recording is the frame sequence that
:func:`mirror_perception.demonstration.recognize_demonstration` decides on, as ``evaluate`` does on the stored
demo, which holds one frame per control tick: it is kept in arrival order with no time-based resampling (the
ticks are not evenly spaced in time). A recording longer than ``max_demo_frames`` keeps every other frame (and
from then on every second one), so it stays uniformly sampled in bounded memory; its clip may then sit up to
half a stride away from the stored demo's (the default 1200 frames is 60 s at 20 Hz, several times the
longest scripted demo).

Stamps are judged against the node's clock: a frame stamped more than ``max_future`` seconds ahead of it is
refused, so a frame from a wrong clock never becomes the newest frame that every real one is compared with; a
frame more than the window older than the newest one means the stream's clock jumped back (a replayed bag, a
restarted simulator), and the window starts over from it, dropping a demonstration being recorded (its
frames straddle the jump).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

_NS = 1_000_000_000


class FrameNote(NamedTuple):
    """Why :meth:`VideoWindow.add` refused a frame, or what it did unusually (``taken``)."""

    reason: str  # "future stamp", "out of order" or "clock jump"
    message: str
    taken: bool


@dataclass
class DemoRecording:
    episode: int
    start_ns: int
    max_frames: int
    end_ns: int | None = None
    outcome: str = ""  # the status state that ended it (success / failure / idle)
    stamps: list[int] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    stride: int = 1
    _seen: int = 0

    def accepts(self, stamp_ns: int) -> bool:
        return stamp_ns >= self.start_ns and (self.end_ns is None or stamp_ns <= self.end_ns)

    def add(self, stamp_ns: int, rgb: np.ndarray) -> None:
        if self.stamps and stamp_ns <= self.stamps[-1]:
            return  # duplicate or out of order
        self._seen += 1
        if (self._seen - 1) % self.stride:
            return
        self.stamps.append(stamp_ns)
        self.frames.append(rgb)
        if len(self.frames) > self.max_frames:
            self.stamps, self.frames = self.stamps[::2], self.frames[::2]
            self.stride *= 2

    def clip(self) -> np.ndarray | None:
        return np.stack(self.frames) if self.frames else None


class VideoWindow:
    """Sliding window + demonstration recorder (see the module docstring)."""

    def __init__(self, window: float, max_demo_frames: int = 1200, max_future: float = 1.0) -> None:
        if not window > 0:
            raise ValueError(f"window must be positive seconds, got {window}")
        if max_demo_frames < 2:
            raise ValueError(f"max_demo_frames must be >= 2, got {max_demo_frames}")
        if not max_future >= 0:
            raise ValueError(f"max_future must be >= 0 seconds, got {max_future}")
        self.window_ns = int(window * _NS)
        self.max_demo_frames = max_demo_frames
        self.max_future_ns = int(max_future * _NS)
        self._frames: deque[tuple[int, np.ndarray]] = deque()
        self.demo: DemoRecording | None = None

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, stamp_ns: int, rgb: np.ndarray, now_ns: int | None = None) -> FrameNote | None:
        """Add one frame; None when it is taken as usual, else a :class:`FrameNote` (see the module docstring
        on stamps). ``now_ns``: the node's clock (None skips the future check, for recorded streams)."""
        if now_ns is not None and stamp_ns - now_ns > self.max_future_ns:
            ahead = (stamp_ns - now_ns) / _NS
            return FrameNote("future stamp", f"stamped {ahead:.3f} s ahead of this node's clock", False)
        if self._frames and stamp_ns <= self._frames[-1][0]:
            newest = self._frames[-1][0]
            if newest - stamp_ns <= self.window_ns:
                return FrameNote("out of order", "not newer than the newest frame (duplicate?)", False)
            self._frames.clear()
            self.demo = None
            self._frames.append((stamp_ns, rgb))
            back = (newest - stamp_ns) / _NS
            return FrameNote("clock jump", f"stamps jumped {back:.3f} s back: the window starts over", True)
        self._frames.append((stamp_ns, rgb))
        while self._frames and self._frames[0][0] < stamp_ns - self.window_ns:
            self._frames.popleft()
        if self.demo is not None and self.demo.accepts(stamp_ns):
            self.demo.add(stamp_ns, rgb)
        return None

    def start_demo(self, episode: int, start_ns: int) -> DemoRecording:
        """Begin recording a demonstration, seeded with window frames stamped at or after ``start_ns``."""
        self.demo = DemoRecording(episode, start_ns, self.max_demo_frames)
        for stamp, rgb in self._frames:
            if stamp >= start_ns:
                self.demo.add(stamp, rgb)
        return self.demo

    def end_demo(self, end_ns: int, outcome: str) -> None:
        if self.demo is not None and self.demo.end_ns is None:
            self.demo.end_ns, self.demo.outcome = end_ns, outcome

    def take_demo(self) -> DemoRecording | None:
        """Hand the recording over and stop recording."""
        demo, self.demo = self.demo, None
        return demo

    def live_clip(self) -> tuple[np.ndarray, int] | None:
        """The window's frames since the demonstration started ``(T, H, W, 3)`` and the newest stamp."""
        if self.demo is None:
            return None
        selected = [(s, f) for s, f in self._frames if self.demo.accepts(s)]
        if not selected:
            return None
        return np.stack([f for _, f in selected]), selected[-1][0]
