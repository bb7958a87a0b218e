"""Closed-loop rollouts of a keyframe policy in the simulator, with RLBench's evaluation rules.

Per episode: reset the task in an unseen scene, then at most ``max_steps`` keyframes; each keyframe is
predicted by the policy and reached by the simulator's planner. An unreachable target (``PlanningError``) or a
malformed / out-of-workspace one (``InvalidActionError``) ends the episode as a failure, as in PerAct / RVT /
ARP evaluation; success is the task's own condition, checked after every keyframe.

Observers (:class:`RolloutObserver`, e.g. ``rollout_video.RolloutVideoRecorder``) can watch an episode: the
reset, each predicted keyframe, the control ticks' observations and the outcome. The simulator renders
per-tick frames only for an observer that asks (``wants_frames``); their rendering counts in
``execution_seconds``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np

from mirror.evaluation.seeds import environment_seed, variation_schedule
from sim_bridge.actions import MAX_KEYFRAMES, KeyframeAction
from sim_bridge.backend import EpisodeInfo, SimBackend
from sim_bridge.errors import InvalidActionError, PlanningError
from sim_bridge.observation import Observation

log = logging.getLogger(__name__)


FAILURE_PLANNING = "planning_error"
FAILURE_INVALID_ACTION = "invalid_action"
FAILURE_MAX_STEPS = "max_steps"
FAILURE_REASONS = (FAILURE_PLANNING, FAILURE_INVALID_ACTION, FAILURE_MAX_STEPS)


class KeyframePolicy(Protocol):
    """What a rollout needs from a policy (``MirrorAgent`` is one)."""

    def act(
        self, observation: Observation, instruction: str | None, step: int
    ) -> tuple[KeyframeAction, np.ndarray]: ...  # instruction None: instruction-blind


class RolloutObserver:
    """Watches one rollout, e.g. to film it; the hooks do nothing unless overridden and run in the
    rollout's thread. ``wants_frames``: the simulator renders every control tick for :meth:`on_frame`
    (slower, so only observers that need it ask)."""

    wants_frames = False

    def on_start(self, info: EpisodeInfo, observation: Observation) -> None:
        """The episode was reset; ``observation`` is its first."""

    def on_keyframe(
        self, step: int, observation: Observation, action: KeyframeAction, e: np.ndarray | None = None
    ) -> None:
        """The policy predicted ``action`` (and its representation ``e``) for ``step`` from ``observation``;
        the simulator has not tried to reach it yet."""

    def on_frame(self, observation: Observation) -> None:
        """One control tick while the arm moves (the simulator's ``on_frame`` callback)."""

    def on_end(self, outcome: EpisodeOutcome) -> None:
        """The episode is over."""


@dataclass
class EpisodeOutcome:
    """One rollout: where it ran, how it ended and where the time went (seconds, wall clock)."""

    task: str
    variation: int
    instruction: str
    eval_seed: int
    episode: int
    env_seed: int
    success: bool
    steps: int
    failure: str | None = None  # one of FAILURE_REASONS, None on success
    blind: bool = False  # the policy was given an empty instruction (the instruction-blind control)
    message: str = ""
    reset_seconds: float = 0.0
    inference_seconds: float = 0.0
    planning_seconds: float = 0.0
    execution_seconds: float = 0.0
    total_seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def run_episode(
    env: SimBackend,
    policy: KeyframePolicy,
    task: str,
    variation: int,
    env_seed: int,
    max_steps: int = MAX_KEYFRAMES,
    eval_seed: int = 0,
    episode: int = 0,
    observers: Sequence[RolloutObserver] = (),
    blind: bool = False,
) -> EpisodeOutcome:
    """Roll ``policy`` out once. A failed step's wall time counts as planning (that is where it failed).

    ``blind``: the instruction-blind control: the policy acts without an instruction in the same scene, which
    tells how much of a success rate the instruction explains (a policy that ignores it scores the same)."""
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    started = time.perf_counter()
    info, observation = env.reset(task, variation, env_seed)
    out = EpisodeOutcome(
        task, variation, info.instruction, eval_seed, episode, env_seed, success=False, steps=0, blind=blind,
        reset_seconds=time.perf_counter() - started,
    )  # fmt: skip
    for observer in observers:
        observer.on_start(info, observation)
    watching = [o for o in observers if o.wants_frames]

    def on_frame(tick_observation: Observation) -> None:
        for o in watching:
            o.on_frame(tick_observation)

    for step in range(max_steps):
        tick = time.perf_counter()
        try:
            action, embodied = policy.act(observation, None if blind else info.instruction, step)
        except InvalidActionError as err:  # the decoded action itself is malformed
            out.inference_seconds += time.perf_counter() - tick
            out.steps = step + 1
            out.failure, out.message = FAILURE_INVALID_ACTION, f"step {step}: policy output: {err}"
            break
        out.inference_seconds += time.perf_counter() - tick
        for observer in observers:
            observer.on_keyframe(step, observation, action, embodied)
        tick = time.perf_counter()
        try:
            result = env.step(action, on_frame if watching else None)
        except (InvalidActionError, PlanningError) as err:
            out.planning_seconds += time.perf_counter() - tick
            out.steps = step + 1
            kind = FAILURE_INVALID_ACTION if isinstance(err, InvalidActionError) else FAILURE_PLANNING
            out.failure, out.message = kind, f"step {step}: {type(err).__name__}: {err}"
            break
        out.planning_seconds += result.planning_seconds
        out.execution_seconds += result.execution_seconds
        out.steps = step + 1
        observation = result.observation
        if result.success:
            out.success = True
            break
    else:
        out.failure, out.message = FAILURE_MAX_STEPS, f"task not completed in {max_steps} keyframes"
    out.total_seconds = time.perf_counter() - started
    for observer in observers:
        observer.on_end(out)
    return out


@dataclass(frozen=True)
class RolloutPlan:
    """One scheduled rollout."""

    task: str
    variation: int
    eval_seed: int
    episode: int
    env_seed: int


def plan_rollouts(
    tasks: Sequence[str], variations: dict[str, Sequence[int]], eval_seeds: Sequence[int], episodes: int
) -> list[RolloutPlan]:
    """Every (task, evaluation seed, episode) with its variation, drawn from ``variations[task]``, and its
    simulator seed (rules in ``seeds``)."""
    plans = []
    for task in tasks:
        chosen = list(variations[task])
        for eval_seed in eval_seeds:
            schedule = variation_schedule(task, len(chosen), eval_seed, episodes)
            for i, slot in enumerate(schedule):
                plans.append(
                    RolloutPlan(task, chosen[slot], int(eval_seed), i, environment_seed(eval_seed, i))
                )
    return plans
