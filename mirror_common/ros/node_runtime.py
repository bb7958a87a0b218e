"""What every long-running node of the stack shares: its ``main`` (init, spin on one thread, clean shutdown).

SIGINT and SIGTERM set a flag that the spin loop checks every 100 ms, so a node always leaves through the same
path (destroy the node, shut the executor and the context down) and exits 0; rclpy's own handlers are off
(they would shut the context down under a callback, e.g. before the bridge's worker has stopped). That path
is bounded: a node that is still alive ``SHUTDOWN_TIMEOUT`` s after the signal (a callback that never returns,
a DDS participant that never finishes deleting) exits with one line naming the stage, because a node that
ignores its stop outlives a killed bringup (no parent is left to escalate to SIGKILL). A node that
cannot start (missing checkpoint, bad parameter) raises :class:`NodeStartupError` (or rclpy a
ParameterException for a value of the wrong type, or an error the caller lists), which is logged as one clear
line and gives exit code 1. It lives in the base package so that the bridge, perception and policy nodes can
all use it without importing each other.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from mirror_common.cli import EXIT_USAGE
from mirror_common.errors import MirrorError

log = logging.getLogger(__name__)

PARENT_PID_ENV = "MIRROR_PARENT_PID"  # set by whoever starts nodes and wants them gone when it dies
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
EXIT_STARTUP_FAILED = EXIT_USAGE  # a setting to fix, like every console script's bad input
EXIT_SHUTDOWN_HUNG = 1
SHUTDOWN_TIMEOUT = 10.0  # s from a stop signal to the end of the process (a clean stop takes ~1 s)


class NodeStartupError(MirrorError, RuntimeError):
    """A node cannot start: its message says what to fix."""


def configure_logging() -> None:
    """Python logging (used by library modules, e.g. the camera-set synchroniser) in ROS's console style."""
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")


def follow_parent() -> None:
    """Die with the process that started this one: when ``MIRROR_PARENT_PID`` names our parent, ask the
    kernel (Linux ``PR_SET_PDEATHSIG``) to send SIGTERM when it dies, which stops the node cleanly; exit at
    once if it died before we asked. A killed bringup or test run then leaves no node behind. Elsewhere, or
    without the variable (a node started by hand or by ``ros2 launch``), nothing changes."""
    value = os.environ.get(PARENT_PID_ENV, "")
    if not value.isdigit() or not sys.platform.startswith("linux"):
        return
    parent = int(value)
    if parent == os.getpid():  # a node run inside the process that set the variable (tests)
        return
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        log.warning("cannot follow the parent process: prctl failed (errno %d)", ctypes.get_errno())
        return
    if os.getppid() == parent:
        return
    try:
        os.kill(parent, 0)  # still alive: we are a grandchild that inherited the variable
    except ProcessLookupError:
        log.error("the process that started this node (pid %d) is gone; exiting", parent)
        raise SystemExit(1) from None


class ShutdownWatchdog:
    """Ends the process if it is still alive ``timeout`` s after :meth:`arm`, naming the stage it hung in.

    Armed, it stays armed past ``run_node``'s return, so interpreter exit (atexit handlers, thread joins)
    is covered too: a stop request means the process is ending. It writes with ``os.write`` because a hung
    stage may hold the logging lock.
    """

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        self.stage = "starting the node"
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def arm(self) -> None:
        """Start the countdown (again: no effect)."""
        with self._lock:
            if self._timer is None:
                self._timer = threading.Timer(self.timeout, self._expire)
                self._timer.daemon = True
                self._timer.start()

    def _expire(self) -> None:
        line = f"[ERROR] {self.name}: shutdown hung for {self.timeout:g} s while {self.stage}; exiting now\n"
        os.write(2, line.encode())
        os._exit(EXIT_SHUTDOWN_HUNG)


class StopFlag:
    """Set by SIGINT/SIGTERM, polled by the spin loop.

    Not a ``threading.Event``: its ``set`` takes a lock, and a second signal arriving while the handler holds
    it re-enters the handler on the same thread and deadlocks. That happens: a dying bringup makes the kernel
    send the parent-death signal once per thread of bringup's that exits, several within a millisecond
    (seen with py-spy: three nested handlers, the node hung for good). Setting a bool takes no lock.
    """

    def __init__(self) -> None:
        self._set = False

    def set(self, *_: object) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


def install_stop_handlers(watchdog: ShutdownWatchdog | None = None) -> StopFlag:
    """SIGINT/SIGTERM -> the returned flag, and ``watchdog`` armed the moment the signal arrives (call from
    the main thread).

    The Python-level handler runs only once the main thread is back in Python, which a callback stuck in C
    never is; so a thread reading the signal module's wakeup fd (written by the C-level handler, from any
    thread) arms the watchdog instead.
    """
    stop = StopFlag()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop.set)
    if watchdog is not None:
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        threading.Thread(
            target=_arm_on_signal, args=(read_end, watchdog), name="stop-signal", daemon=True
        ).start()
    return stop


def _arm_on_signal(read_end: int, watchdog: ShutdownWatchdog) -> None:
    if os.read(read_end, 1):  # one byte per signal caught
        watchdog.arm()


def run_node(
    make_node: Callable[[], Node],
    name: str,
    args: list[str] | None = None,
    startup_errors: tuple[type[BaseException], ...] = (),
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
) -> int:
    """Create the node with ``make_node`` and spin it until SIGINT/SIGTERM; returns the exit code.

    ``startup_errors``: further exception types that ``make_node`` raises for a setting the user must fix.
    ``shutdown_timeout``: from a stop signal (or from leaving the spin loop otherwise) the process ends
    within this many seconds, cleanly or with exit code :data:`EXIT_SHUTDOWN_HUNG` (see ShutdownWatchdog).
    """
    configure_logging()
    follow_parent()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    watchdog = ShutdownWatchdog(name, shutdown_timeout)
    stop = install_stop_handlers(watchdog)
    try:
        node = make_node()
    except (NodeStartupError, ParameterException, *startup_errors) as err:
        log.error("%s could not start: %s", name, err)
        rclpy.try_shutdown()
        return EXIT_STARTUP_FAILED
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    watchdog.stage = "spinning (a callback did not return)"
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        watchdog.arm()
        watchdog.stage = "destroying the node"
        executor.remove_node(node)
        node.destroy_node()
        watchdog.stage = "shutting the executor and the ROS context down"
        executor.shutdown()
        rclpy.try_shutdown()
        watchdog.stage = "exiting the interpreter"
    log.info("%s stopped", name)
    return 0
