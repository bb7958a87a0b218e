"""The interface every simulator backend implements (embedded PyBullet, real RLBench/CoppeliaSim)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sim_bridge.actions import KeyframeAction
from sim_bridge.observation import Observation

FrameCallback = Callable[[Observation], None]


@dataclass
class EpisodeInfo:
    """What a reset chose: the task, its variation, the instruction paraphrases and the seed."""

    task: str
    variation: int
    descriptions: list[str]
    seed: int

    @property
    def instruction(self) -> str:
        """The canonical instruction (element 0, as PerAct/RVT/ARP use it)."""
        return self.descriptions[0]


@dataclass
class StepResult:
    observation: Observation
    success: bool
    frames: int  # control ticks executed while reaching the keyframe
    planning_seconds: float = 0.0  # IK + path search
    execution_seconds: float = 0.0  # physics, rendering and callbacks while moving


class SimBackend(Protocol):
    """Keyframe-controlled manipulation simulator with RLBench's tasks and cameras.

    ``step`` raises :class:`sim_bridge.errors.InvalidActionError` for a malformed action and
    :class:`sim_bridge.errors.PlanningError` for an unreachable one; in both cases the arm has not moved and
    the backend stays usable (the caller decides whether the episode failed).
    """

    def task_names(self) -> list[str]: ...

    def variation_count(self, task: str) -> int: ...

    def reset(self, task: str, variation: int, seed: int) -> tuple[EpisodeInfo, Observation]: ...

    def step(self, action: KeyframeAction, on_frame: FrameCallback | None = None) -> StepResult: ...

    def observation(self) -> Observation: ...

    def success(self) -> bool: ...

    def demo(self, on_frame: FrameCallback | None = None) -> list[Observation]:
        """Run the task's scripted demonstration from the reset state; returns every recorded frame."""
        ...

    def close(self) -> None: ...
