"""What the mirror loop records per episode and the summary it prints at the end (ROS-free)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from mirror.ros.task_selection import EpisodePlan


@dataclass
class LoopEpisode:
    """One episode of the mirror loop: the demonstration, what perception recognised, how the policy did."""

    plan: EpisodePlan
    truth: str  # the demonstrated variation's instruction
    recognized: str = ""
    recognition_score: float = math.nan
    demo_outcome: str = ""  # success / failure of the scripted demonstration
    demo_seconds: float = math.nan
    outcome: str = ""  # success / failure of the policy's episode
    reason: str = ""
    steps: int = 0
    inference_ms: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    episode_seconds: float = math.nan

    @property
    def recognized_correctly(self) -> bool:
        return bool(self.recognized) and self.recognized == self.truth

    @property
    def succeeded(self) -> bool:
        return self.outcome == "success"


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


@dataclass(frozen=True)
class LoopSummary:
    episodes: int
    recognized: int
    succeeded: int
    actions: int
    mean_inference_ms: float
    mean_latency_ms: float
    mean_episode_seconds: float
    mean_demo_seconds: float

    @classmethod
    def of(cls, records: Sequence[LoopEpisode]) -> LoopSummary:
        inference = [v for r in records for v in r.inference_ms]
        latency = [v for r in records for v in r.latency_ms]
        return cls(
            episodes=len(records),
            recognized=sum(r.recognized_correctly for r in records),
            succeeded=sum(r.succeeded for r in records),
            actions=len(inference),
            mean_inference_ms=_mean(inference),
            mean_latency_ms=_mean(latency),
            mean_episode_seconds=_mean([r.episode_seconds for r in records]),
            mean_demo_seconds=_mean([r.demo_seconds for r in records]),
        )

    @property
    def recognition_accuracy(self) -> float:
        return self.recognized / self.episodes if self.episodes else math.nan

    @property
    def success_rate(self) -> float:
        return self.succeeded / self.episodes if self.episodes else math.nan

    def lines(self) -> list[str]:
        def pct(value: float) -> str:
            return "n/a" if math.isnan(value) else f"{100 * value:.1f}%"

        def num(value: float, unit: str, digits: int = 1) -> str:
            return "n/a" if math.isnan(value) else f"{value:.{digits}f} {unit}"

        return [
            f"summary over {self.episodes} episode(s):",
            f"  recognition accuracy: {self.recognized}/{self.episodes} = {pct(self.recognition_accuracy)}",
            f"  success rate:         {self.succeeded}/{self.episodes} = {pct(self.success_rate)}",
            f"  actions:              {self.actions}",
            f"  mean inference time:  {num(self.mean_inference_ms, 'ms')}",
            f"  mean obs->action:     {num(self.mean_latency_ms, 'ms')}",
            f"  mean demo time:       {num(self.mean_demo_seconds, 's')}",
            f"  mean episode time:    {num(self.mean_episode_seconds, 's')}",
        ]
