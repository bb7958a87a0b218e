"""``run_node``'s way out: a stop signal ends the process cleanly, and a node that ignores it is ended.

The node cases run a real rclpy node in its own process (domain :data:`DOMAIN_ID`, loopback discovery) and
send it SIGTERM, as a dying bringup's ``PR_SET_PDEATHSIG`` does.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from ros_test_support import environment, require_module

require_module("rclpy")

from mirror_common.ros.node_runtime import install_stop_handlers  # noqa: E402

DOMAIN_ID = 219  # distinct from every other test module

NODE_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from rclpy.node import Node
    from mirror_common.ros.node_runtime import run_node

    class Probe(Node):
        def __init__(self):
            super().__init__("runtime_probe")
            self.create_timer(0.05, self.tick)
            self.ticks = 0

        def tick(self):
            self.ticks += 1
            if self.ticks == 1:
                print("ready", flush=True)  # spinning: the stop signal comes after this line
            if sys.argv[1] == "stuck_callback":
                time.sleep(3600)  # a callback that never returns: the spin loop never sees the stop

        def destroy_node(self):
            if sys.argv[1] == "hung_teardown":
                time.sleep(3600)  # a teardown that never returns
            super().destroy_node()

    sys.exit(run_node(Probe, "runtime_probe", shutdown_timeout=1.0))
    """
)


def stop_probe(mode: str) -> tuple[int, str, float]:
    """Start the probe node, SIGTERM it once ready; its exit code, output and seconds from signal to exit."""
    with environment(ROS_DOMAIN_ID=str(DOMAIN_ID), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST"):
        proc = subprocess.Popen(
            [sys.executable, "-c", NODE_SCRIPT, mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        return proc.returncode, output, time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_stopped_node_exits_cleanly():
    code, output, _ = stop_probe("clean")
    assert code == 0, output
    assert "runtime_probe stopped" in output and "shutdown hung" not in output


@pytest.mark.faults
@pytest.mark.parametrize(
    ("mode", "stage"),
    [("hung_teardown", "destroying the node"), ("stuck_callback", "spinning (a callback did not return)")],
)
def test_a_node_that_ignores_its_stop_is_ended_with_the_stage_named(mode, stage):
    code, output, seconds = stop_probe(mode)
    assert code == 1, output
    assert f"runtime_probe: shutdown hung for 1 s while {stage}; exiting now" in output
    assert seconds < 20  # without the watchdog it would sleep for an hour


@pytest.mark.faults
def test_the_stop_handler_survives_being_reentered_at_any_point():
    """A dying bringup sends several SIGTERMs within a millisecond, so the handler can be interrupted by
    itself. Here it is re-entered at every step of its own run (each Python and C call it makes); a handler
    that takes a lock (``threading.Event.set``) deadlocks, as a node in CI did."""
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    stop = install_stop_handlers()
    handler = signal.getsignal(signal.SIGTERM)
    try:
        nested = [False]

        def reenter(frame, event, arg):
            if not nested[0]:
                nested[0] = True
                try:
                    handler(signal.SIGTERM, None)
                finally:
                    nested[0] = False

        def run_handler() -> None:
            sys.setprofile(reenter)
            try:
                handler(signal.SIGTERM, None)
            finally:
                sys.setprofile(None)

        worker = threading.Thread(target=run_handler, daemon=True)
        worker.start()
        worker.join(5.0)
        assert not worker.is_alive(), "the stop handler deadlocked when re-entered"
        assert stop.is_set()
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
