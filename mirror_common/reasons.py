"""Rejections counted and logged per reason, so that a flood of one kind never hides a new kind.

A node that drops bad input (a malformed frame, a stamp from the future, a busy bridge) logs each kind of
rejection the first time at once, then at most once per ``period`` with how many it held back. A kind is the
reason plus the message's wording with its numbers masked, so "64x64 instead of 128x128" and "mono8 instead
of rgb8" both show although both are "malformed". The latest message of every reason is kept with its time,
so a watchdog can say what went wrong lately and how long ago. ROS-free: it
writes to a :mod:`logging` logger (the nodes configure it in ROS's console style).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

_NUMBER = re.compile(r"\d+(\.\d+)?")


@dataclass
class _Reason:
    count: int = 0
    last_message: str = ""
    last_time: float = 0.0


@dataclass
class _Kind:
    held_back: int = 0
    last_logged: float = float("-inf")


class ReasonLog:
    """Counts per rejection reason and rate-limited warnings per kind (see the module docstring)."""

    def __init__(
        self, logger: logging.Logger, period: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not period > 0:
            raise ValueError(f"period must be positive seconds, got {period}")
        self.logger = logger
        self.period = period
        self.clock = clock
        self._reasons: dict[str, _Reason] = {}
        self._kinds: dict[tuple[str, str], _Kind] = {}

    def record(self, reason: str, message: str) -> None:
        """Count one rejection for ``reason`` and log ``message`` unless its kind logged lately."""
        now = self.clock()
        entry = self._reasons.setdefault(reason, _Reason())
        entry.count += 1
        entry.last_message, entry.last_time = message, now
        kind = self._kinds.setdefault((reason, _NUMBER.sub("#", message)), _Kind())
        if now - kind.last_logged < self.period:
            kind.held_back += 1
            return
        more = f" (+{kind.held_back} more like it since the last report)" if kind.held_back else ""
        self.logger.warning("rejected (%s, %d so far): %s%s", reason, entry.count, message, more)
        kind.last_logged, kind.held_back = now, 0

    def count(self, reason: str | None = None) -> int:
        """Rejections of ``reason``, or of every reason."""
        if reason is not None:
            return self._reasons[reason].count if reason in self._reasons else 0
        return sum(r.count for r in self._reasons.values())

    @property
    def last_message(self) -> str:
        """The newest rejection's message ("" if none)."""
        if not self._reasons:
            return ""
        return max(self._reasons.values(), key=lambda r: r.last_time).last_message

    def describe(self, limit: int = 3) -> str:
        """The latest rejection of up to ``limit`` reasons, newest first, each with its age, e.g.
        ``"future stamp x3, 1.2 s ago: ...; malformed x1, 40.0 s ago: ..."``; "none" without any."""
        if not self._reasons:
            return "none"
        now = self.clock()
        newest = sorted(self._reasons.items(), key=lambda item: item[1].last_time, reverse=True)[:limit]
        return "; ".join(
            f"{reason} x{r.count}, {now - r.last_time:.1f} s ago: {r.last_message}" for reason, r in newest
        )
