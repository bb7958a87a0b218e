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
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

_NS = 1_000_000_000


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

    def __init__(self, window: float, max_demo_frames: int = 1200) -> None:
        if not window > 0:
            raise ValueError(f"window must be positive seconds, got {window}")
        if max_demo_frames < 2:
            raise ValueError(f"max_demo_frames must be >= 2, got {max_demo_frames}")
        self.window_ns = int(window * _NS)
        self.max_demo_frames = max_demo_frames
        self._frames: deque[tuple[int, np.ndarray]] = deque()
        self.demo: DemoRecording | None = None

    def __len__(self) -> int:
        return len(self._frames)

    def add(self, stamp_ns: int, rgb: np.ndarray) -> bool:
        """Add one frame; False (ignored) if it is not newer than the newest frame."""
        if self._frames and stamp_ns <= self._frames[-1][0]:
            return False
        self._frames.append((stamp_ns, rgb))
        while self._frames and self._frames[0][0] < stamp_ns - self.window_ns:
            self._frames.popleft()
        if self.demo is not None and self.demo.accepts(stamp_ns):
            self.demo.add(stamp_ns, rgb)
        return True

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
