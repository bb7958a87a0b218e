"""The one thread that owns the simulator backend (ROS-free).

Backends are not thread-safe (PyBullet clients, CoppeliaSim's main loop), so a single worker thread creates
the backend, runs every command from a queue (reset, demo, keyframe action, stop) and, between commands,
publishes camera sets at ``publish_rate`` Hz; during motion it publishes one set per control tick through the
backend's frame callback. Other threads only submit commands. A command that arrives while another runs is
rejected (:class:`BridgeBusyError`), never queued; ``stop`` alone goes through and aborts the motion at the
next control tick (a path search in progress finishes first).

While idle nothing in the scene moves (physics only steps inside commands), so by default the worker renders
once after each command and re-publishes that observation with fresh stamps; ``idle_rerender`` renders every
tick instead (for backends whose scene can change on its own).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sim_bridge.actions import MAX_KEYFRAMES
from sim_bridge.backend import SimBackend
from sim_bridge.errors import SimError
from sim_bridge.observation import Observation
from sim_bridge.ros.episode import EpisodeController, StopRequestedError
from sim_bridge.ros.errors import BridgeBusyError, EpisodeStateError, MessageError
from sim_bridge.ros.status import FAILURE, RUNNING, SUCCESS, EpisodeStatus

log = logging.getLogger(__name__)

MAX_PUBLISH_RATE = 1000.0


@dataclass
class WorkerConfig:
    publish_rate: float = 10.0  # Hz, camera sets while idle
    max_steps: int = MAX_KEYFRAMES
    idle_rerender: bool = False
    start_timeout: float = 300.0  # s to build the backend (CoppeliaSim takes a while)
    action_timeout: float = 0.0  # s a running episode waits for its next action before it fails; 0: forever

    def __post_init__(self) -> None:
        if not 0 < self.publish_rate <= MAX_PUBLISH_RATE:
            raise ValueError(f"publish_rate must be in (0, {MAX_PUBLISH_RATE}] Hz, got {self.publish_rate}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.action_timeout < 0:
            raise ValueError(f"action_timeout must be >= 0 s (0: no limit), got {self.action_timeout}")


@dataclass
class Ticket:
    """Handle of a submitted command: ``started`` once it runs, ``finished`` once it is done."""

    kind: str
    started: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    message: str = ""

    def _start(self) -> None:
        self.started.set()

    def _finish(self, ok: bool, message: str) -> None:
        self.ok, self.message = ok, message
        self.started.set()
        self.finished.set()


@dataclass
class _Command:
    ticket: Ticket
    args: tuple = ()


_SHUTDOWN = _Command(Ticket("shutdown"))


class SimWorker:
    """Owns a backend in one thread; see the module docstring."""

    def __init__(
        self,
        backend_factory: Callable[[], SimBackend],
        publish_set: Callable[[Observation], None],
        publish_status: Callable[[EpisodeStatus], None],
        config: WorkerConfig | None = None,
    ) -> None:
        self.config = config or WorkerConfig()
        self._factory = backend_factory
        self._publish_set = publish_set
        self._publish_status = publish_status
        self._queue: queue.Queue[_Command] = queue.Queue()
        self._lock = threading.Lock()
        self._busy: str = ""  # kind of the command being run, "" when idle
        self._stop = threading.Event()
        self._closing = threading.Event()
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._controller: EpisodeController | None = None
        self._idle_obs: Observation | None = None
        self._publish_failures = 0
        self._waiting_since = time.monotonic()  # when the running episode's next action became due
        self._last_status: EpisodeStatus | None = None
        self._thread = threading.Thread(target=self._run, name="sim_worker", daemon=True)

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the thread and build the backend in it; re-raises the backend's construction error."""
        self._thread.start()
        if not self._ready.wait(self.config.start_timeout):
            self._closing.set()
            raise TimeoutError(f"the simulator backend did not start within {self.config.start_timeout} s")
        if self._start_error is not None:
            self._thread.join()
            raise self._start_error

    def shutdown(self, timeout: float = 30.0) -> None:
        """Abort any motion, stop the thread, close the backend. Idempotent."""
        if not self._thread.is_alive():
            return
        self._closing.set()
        self._stop.set()
        self._queue.put(_SHUTDOWN)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("the simulator worker did not stop within %.0f s", timeout)

    @property
    def catalog(self) -> dict[str, int]:
        """Task -> variation count of the backend (fixed once started)."""
        if self._controller is None:
            raise RuntimeError("the worker has not started")
        return self._controller.catalog

    @property
    def status(self) -> EpisodeStatus:
        if self._controller is None:
            return EpisodeStatus()
        return self._controller.status.with_(busy=bool(self._busy))

    @property
    def busy(self) -> str:
        """The command running now ("reset", "demo", "action") or ""."""
        return self._busy

    def set_action_timeout(self, seconds: float) -> None:
        self.config.action_timeout = seconds

    def set_max_steps(self, value: int) -> None:
        self.config.max_steps = value
        if self._controller is not None:
            self._controller.max_steps = value

    # -- commands (any thread) -----------------------------------------------------------------------------
    def submit_reset(self, task: str, variation: int, seed: int) -> Ticket:
        return self._submit("reset", (task, variation, seed))

    def submit_demo(self) -> Ticket:
        return self._submit("demo")

    def submit_action(self, vector: np.ndarray | MessageError) -> Ticket:
        """Queue a keyframe action (or a malformed one, which fails the running episode)."""
        return self._submit("action", (vector,))

    def request_stop(self) -> Ticket:
        """Abort the running demo/action at the next control tick and end the episode (state idle)."""
        ticket = Ticket("stop")
        self._stop.set()
        self._queue.put(_Command(ticket))
        return ticket

    def _submit(self, kind: str, args: tuple = ()) -> Ticket:
        if self._closing.is_set() or not self._thread.is_alive():
            raise RuntimeError("the simulator worker is not running")
        with self._lock:
            if self._busy:
                raise BridgeBusyError(f"busy ({_DESCRIPTIONS[self._busy]}); {kind} rejected")
            self._busy = kind
        ticket = Ticket(kind)
        self._queue.put(_Command(ticket, args))
        return ticket

    # -- the thread ----------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            backend = self._factory()
            self._controller = EpisodeController(backend, self.config.max_steps)
        except BaseException as err:  # handed to start() in the caller's thread
            self._start_error = err
            self._ready.set()
            return
        self._ready.set()
        self._emit_status()
        try:
            self._loop()
        finally:
            self._busy = ""
            backend.close()

    def _loop(self) -> None:
        next_publish = time.monotonic()
        while True:
            timeout = max(0.0, next_publish - time.monotonic())
            try:
                command = self._queue.get(timeout=timeout)
            except queue.Empty:
                self._publish_idle()
                self._check_action_timeout()
                period = 1.0 / self.config.publish_rate
                next_publish = max(next_publish + period, time.monotonic())  # no burst after a stall
                continue
            if command is _SHUTDOWN:
                return
            self._execute(command)
            next_publish = time.monotonic()

    def _execute(self, command: _Command) -> None:
        controller = self._controller
        assert controller is not None
        ticket = command.ticket
        ok, message = True, ""
        try:
            if ticket.kind == "reset":
                status = controller.reset(*command.args)
                message = status.instruction
            elif ticket.kind == "demo":
                status = controller.play_demo(self._on_frame, lambda s: self._announce(ticket, s))
                ok, message = status.state == SUCCESS, status.reason
            elif ticket.kind == "action":
                status = controller.execute(
                    command.args[0], self._on_frame, lambda s: self._announce(ticket, s)
                )
                ok, message = status.state != FAILURE, status.reason or status.state
        except EpisodeStateError as err:
            ok, message = False, str(err)
            log.warning("%s rejected: %s", ticket.kind, err)
        except (SimError, ValueError, KeyError, IndexError) as err:  # bad reset request, failed reset
            ok, message = False, str(err)
            log.warning("%s failed: %s", ticket.kind, err)
        except Exception as err:  # a bug must not kill the bridge: log it, fail the episode
            log.exception("%s raised unexpectedly", ticket.kind)
            ok, message = False, f"internal error: {type(err).__name__}: {err}"
            controller.fail(message)
        if self._stop.is_set():
            self._stop.clear()
            controller.stop()
        self._idle_obs = None
        self._waiting_since = time.monotonic()  # a reset or an action just ended: the next action is due
        if ticket.kind != "stop":  # a stop runs beside the busy command slot, which may be taken again
            with self._lock:
                self._busy = ""
        self._emit_status()
        ticket._finish(ok, message)

    def _check_action_timeout(self) -> None:
        """Fail a running episode whose next action has not come for ``action_timeout`` s (a dead policy),
        so it does not stay "running" forever."""
        timeout = self.config.action_timeout
        controller = self._controller
        if not timeout or controller is None or controller.status.state != RUNNING:
            return
        if time.monotonic() - self._waiting_since > timeout:
            controller.fail(f"no keyframe action for {timeout:g} s (is the policy running?)")
            self._emit_status()

    def _announce(self, ticket: Ticket, status: EpisodeStatus) -> None:
        """Motion is starting: publish the busy status, then release waiters (play_demo answers now)."""
        self._emit_status()
        ticket._start()

    def _on_frame(self, observation: Observation) -> None:
        if self._stop.is_set():
            raise StopRequestedError
        self._send(observation)

    def _publish_idle(self) -> None:
        controller = self._controller
        if controller is None or not controller.has_scene:
            return
        if self._idle_obs is None or self.config.idle_rerender:
            try:
                self._idle_obs = controller.backend.observation()
            except Exception:  # a failed render must not stop the worker; the next tick tries again
                self._publish_failures += 1
                if self._publish_failures <= 3:
                    log.exception("rendering the idle camera set failed")
                return
        self._send(self._idle_obs)

    def _send(self, observation: Observation) -> None:
        if self._closing.is_set():
            return
        try:
            self._publish_set(observation)
        except Exception:  # publishing must not stop the simulator
            self._publish_failures += 1
            if self._publish_failures <= 3:
                log.exception("publishing a camera set failed")

    def _emit_status(self) -> None:
        """Publish the status if it changed (a rejected command leaves it as it was)."""
        status = self.status
        if self._closing.is_set() or status == self._last_status:
            return
        self._last_status = status
        try:
            self._publish_status(status)
        except Exception:  # a closed publisher must not stop the simulator
            log.exception("publishing the episode status failed")


_DESCRIPTIONS = {
    "reset": "resetting the episode",
    "demo": "playing the demo",
    "action": "executing an action",
}
