"""Episode logic of the bridge, free of ROS: resets, demos, keyframe actions and the resulting status.

The evaluation protocol (DESIGN.md section 7): an episode succeeds when the task's condition holds after an
action, and fails on an invalid or unreachable action (the arm has not moved; the episode ends, as in
PerAct/ARP evaluation) or after ``max_steps`` actions without success.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from sim_bridge.actions import MAX_KEYFRAMES, KeyframeAction
from sim_bridge.backend import FrameCallback, SimBackend
from sim_bridge.errors import (
    InvalidActionError,
    PlanningError,
    SimError,
    UnknownTaskError,
    UnknownVariationError,
)
from sim_bridge.ros.errors import EpisodeStateError, MessageError
from sim_bridge.ros.status import DEMO, EXECUTING, FAILURE, IDLE, RUNNING, SUCCESS, EpisodeStatus

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("bullet", "rlbench")
NEXT_SEED = -1  # the seed parameter's value meaning "one more than the last episode's seed"
MAX_SEED = 2**32 - 1  # numpy's legacy RNG (RLBench) takes 32-bit seeds


class StopRequestedError(Exception):
    """Raised from a frame callback to abort the motion in progress (the stop service)."""


def make_backend(name: str) -> SimBackend:
    """Construct a backend by name; ``rlbench`` raises BackendUnavailableError without CoppeliaSim."""
    if name == "bullet":
        from sim_bridge.bullet.env import BulletBackend

        return BulletBackend()
    if name == "rlbench":
        from sim_bridge.rlbench_backend import RLBenchBackend

        return RLBenchBackend()
    raise ValueError(f"unknown backend {name!r}; expected one of {BACKENDS}")


def backend_catalog(backend: SimBackend) -> dict[str, int]:
    """Task name -> variation count for every task the backend serves."""
    return {task: backend.variation_count(task) for task in backend.task_names()}


def validate_episode_request(catalog: dict[str, int], task: str, variation: int, seed: int) -> None:
    """Raise a clear, typed error for a task/variation/seed the backend cannot start."""
    if task not in catalog:
        raise UnknownTaskError(f"unknown task {task!r}; available: {', '.join(sorted(catalog))}")
    count = catalog[task]
    if not 0 <= variation < count:
        raise UnknownVariationError(f"task {task!r} has variations 0..{count - 1}, got {variation}")
    if not (seed == NEXT_SEED or 0 <= seed <= MAX_SEED):
        raise ValueError(f"seed must be -1 (next seed) or in 0..{MAX_SEED}, got {seed}")


class EpisodeController:
    """Runs one episode at a time on a backend and keeps its :class:`EpisodeStatus` (``busy``/``stamp`` are
    left to the caller). Not thread-safe: call it from the thread that owns the backend."""

    def __init__(self, backend: SimBackend, max_steps: int = MAX_KEYFRAMES) -> None:
        self.backend = backend
        self.max_steps = max_steps
        self.catalog = backend_catalog(backend)
        self.status = EpisodeStatus()
        self._next_seed = 0
        self._scene_ready = False

    @property
    def has_scene(self) -> bool:
        """Whether the backend holds an episode's scene (so there is something to render)."""
        return self._scene_ready

    def reset(self, task: str, variation: int, seed: int) -> EpisodeStatus:
        validate_episode_request(self.catalog, task, variation, seed)
        seed = self._next_seed if seed == NEXT_SEED else seed
        self._next_seed = seed + 1
        episode = self.status.episode + 1
        self._scene_ready = False  # a failed reset may have torn the old scene down
        try:
            info, _ = self.backend.reset(task, variation, seed)
        except (SimError, ValueError) as err:
            self.status = EpisodeStatus(
                task, variation, "", seed, episode, state=IDLE, reason=f"reset failed: {err}"
            )
            raise
        self.status = EpisodeStatus(task, variation, info.instruction, seed, episode, 0, RUNNING)
        self._scene_ready = True
        log.info("episode %d: %s variation %d seed %d: %r", episode, task, variation, seed, info.instruction)
        return self.status

    def play_demo(
        self, on_frame: FrameCallback, on_start: Callable[[EpisodeStatus], None] | None = None
    ) -> EpisodeStatus:
        """Run the scripted demonstration of a freshly reset episode, streaming every control tick."""
        if self.status.state != RUNNING or self.status.step != 0:
            raise EpisodeStateError(
                "play_demo needs a freshly reset episode "
                f"(state {self.status.state}, step {self.status.step}); call reset_episode first"
            )
        self.status = self.status.with_(state=DEMO, reason="")
        if on_start is not None:
            on_start(self.status)
        try:
            self.backend.demo(on_frame)
        except StopRequestedError:
            return self.stop()
        except (SimError, ValueError) as err:
            return self._end(FAILURE, f"demo failed: {err}")
        if self.backend.success():
            return self._end(SUCCESS, "demo reached the task's success condition")
        return self._end(FAILURE, "demo finished but the task's success condition does not hold")

    def execute(
        self,
        vector: np.ndarray | MessageError,
        on_frame: FrameCallback,
        on_start: Callable[[EpisodeStatus], None] | None = None,
    ) -> EpisodeStatus:
        """Execute one keyframe action (or fail the episode on a malformed one)."""
        if self.status.state != RUNNING:
            raise EpisodeStateError(
                f"no running episode (state {self.status.state}); call reset_episode before sending actions"
            )
        if isinstance(vector, MessageError):
            return self._end(FAILURE, f"malformed keyframe_action: {vector}")
        try:
            action = KeyframeAction.from_vector(vector)
        except InvalidActionError as err:
            return self._end(FAILURE, f"invalid action: {err}")
        self.status = self.status.with_(state=EXECUTING, reason="")
        if on_start is not None:
            on_start(self.status)
        try:
            result = self.backend.step(action, on_frame)
        except StopRequestedError:
            return self.stop()
        except InvalidActionError as err:
            return self._end(FAILURE, f"invalid action: {err}")
        except PlanningError as err:
            return self._end(FAILURE, f"planning failed: {err}")
        except SimError as err:
            return self._end(FAILURE, f"simulator error: {err}")
        step = self.status.step + 1
        self.status = self.status.with_(step=step)
        if result.success:
            return self._end(SUCCESS, f"success condition holds after {step} actions")
        if step >= self.max_steps:
            return self._end(FAILURE, f"max_steps ({self.max_steps}) reached without success")
        self.status = self.status.with_(state=RUNNING)
        return self.status

    def stop(self) -> EpisodeStatus:
        """End a running episode without a verdict (the scene stays and keeps streaming)."""
        if self.status.state in (RUNNING, DEMO, EXECUTING):
            self.status = self.status.with_(state=IDLE, reason="stopped by request")
            log.info("episode %d stopped by request", self.status.episode)
        return self.status

    def fail(self, reason: str) -> EpisodeStatus:
        """End the running episode as a failure (e.g. an unexpected simulator exception)."""
        return self._end(FAILURE, reason) if self.status.state != IDLE else self.status

    def _end(self, state: str, reason: str) -> EpisodeStatus:
        self.status = self.status.with_(state=state, reason=reason)
        level = logging.INFO if state == SUCCESS else logging.WARNING
        log.log(level, "episode %d ended: %s (%s)", self.status.episode, state, reason)
        return self.status
