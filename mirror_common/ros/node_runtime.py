"""What every long-running node of the stack shares: its ``main`` (init, spin on one thread, clean shutdown).

SIGINT and SIGTERM set a flag that the spin loop checks every 100 ms, so a node always leaves through the same
path (destroy the node, shut the executor and the context down) and exits 0; rclpy's own handlers are off
(they would shut the context down under a callback, e.g. before the bridge's worker has stopped). A node that
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


def install_stop_handlers() -> threading.Event:
    """SIGINT/SIGTERM -> the returned event (call from the main thread)."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def run_node(
    make_node: Callable[[], Node],
    name: str,
    args: list[str] | None = None,
    startup_errors: tuple[type[BaseException], ...] = (),
) -> int:
    """Create the node with ``make_node`` and spin it until SIGINT/SIGTERM; returns the exit code.

    ``startup_errors``: further exception types that ``make_node`` raises for a setting the user must fix.
    """
    configure_logging()
    follow_parent()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = install_stop_handlers()
    try:
        node = make_node()
    except (NodeStartupError, ParameterException, *startup_errors) as err:
        log.error("%s could not start: %s", name, err)
        rclpy.try_shutdown()
        return EXIT_STARTUP_FAILED
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.remove_node(node)
        node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
    log.info("%s stopped", name)
    return 0
