"""``mirror_bringup``: start the Mirror stack as ``ros2 launch mirror_policy sim.launch.py`` would, without
the launch packages (they are not on PyPI).

Starts every node of :data:`~mirror.ros.launch_config.NODES` (sim_bridge, policy, perception,
mirror_loop) as ``python -m <module> --ros-args -r __node:=<name> --params-file <yaml> -p <override>...``,
each in its own process group, prefixes their output with ``[<node>]``, waits for mirror_loop to finish (with
``--episodes 0`` mirror_loop runs nothing and the stack stays up until Ctrl-C), then stops every child:
SIGINT, then SIGTERM after ``--sigint-timeout`` s, then SIGKILL after ``--sigterm-timeout`` s. A second Ctrl-C
skips the SIGINT grace period; SIGTERM and SIGHUP (the terminal closed) stop the stack the same way.

Supervision: a node marked ``respawn`` (the bridge, the policy, the perception node) that dies while the stack
runs (killed, crashed: any exit but 0 and 2, which mean it was stopped or cannot start) is restarted after
``RESPAWN_DELAY`` s, doubled for each further restart, at most ``MAX_RESPAWNS`` times. Every child follows
bringup's life (:func:`mirror_common.ros.node_runtime.follow_parent`, Linux): if bringup is killed, even with
SIGKILL, the kernel sends each node SIGTERM, so no node outlives it.

``--videos DIR`` / ``--record DIR`` make mirror_loop write one annotated GIF / one MCAP recording per
episode into DIR (relative to the current directory; created if needed, refused if a file is in the way).

Children get ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` unless it is set (DDS discovery stays on this
machine) and inherit ``ROS_DOMAIN_ID``.

Exit code: mirror_loop's (0 done — also after Ctrl-C with ``--episodes 0`` —, 1 the stack failed, 2 bad
configuration, 130 interrupted while episodes were running, 128+N if it had to be killed by signal N), or 2
when the stack cannot be started at all (bad parameter file, missing checkpoint).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from mirror.ros.launch_config import (
    DEFAULT_CHECKPOINT,
    LAUNCH_ARGUMENTS,
    MAX_RESPAWNS,
    NODES,
    RESPAWN_DELAY,
    NodeSpec,
    ParamsFileError,
    child_environment,
    default_params_file,
    load_params_file,
    node_command,
    resolve_data_path,
)
from mirror_common.cli import EXIT_USAGE, console_main
from mirror_common.outputs import prepare_output_directory
from mirror_common.ros.node_runtime import PARENT_PID_ENV, follow_parent

EXIT_BAD_CONFIG = EXIT_USAGE
NO_RESPAWN_CODES = (0, EXIT_USAGE)  # stopped on purpose, or cannot start: restarting would not help
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
OUTPUT_ARGUMENTS = ("videos", "record")  # launch arguments naming output directories
POLL_PERIOD = 0.1


@dataclass
class Child:
    spec: NodeSpec
    command: list[str]
    process: subprocess.Popen
    forwarder: threading.Thread
    reported: bool = False  # its unexpected exit was announced
    respawns: int = 0  # restarts so far
    respawn_at: float | None = None  # monotonic time of the pending restart

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class SignalLatch:
    """Counts SIGINT/SIGTERM/SIGHUP so the main loop can react (the handler itself does nothing else)."""

    count: int = 0
    last: int = 0

    def __call__(self, signum: int, frame: object) -> None:
        self.count += 1
        self.last = signum


def exit_code(returncode: int | None) -> int:
    """A child's return code as a shell exit status (killed by signal N -> 128 + N)."""
    if returncode is None:
        return 1
    return 128 - returncode if returncode < 0 else returncode


class Bringup:
    """Starts, watches and stops the stack's processes (see the module docstring)."""

    def __init__(
        self,
        commands: Sequence[tuple[NodeSpec, list[str]]],
        env: dict[str, str],
        out: TextIO,
        sigint_timeout: float = 20.0,
        sigterm_timeout: float = 5.0,
    ) -> None:
        self.commands = list(commands)
        self.env = env
        self.out = out
        self.sigint_timeout = sigint_timeout
        self.sigterm_timeout = sigterm_timeout
        self.children: list[Child] = []
        self.signals = SignalLatch()
        self._lock = threading.Lock()

    def say(self, line: str) -> None:
        with self._lock:
            self.out.write(f"[bringup] {line}\n")
            self.out.flush()

    def _forward(self, name: str, stream: TextIO) -> None:
        for line in stream:
            with self._lock:
                self.out.write(f"[{name}] {line if line.endswith(chr(10)) else line + chr(10)}")
                self.out.flush()
        stream.close()

    def _spawn(self, spec: NodeSpec, command: list[str]) -> tuple[subprocess.Popen, threading.Thread]:
        process = subprocess.Popen(
            command,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,  # own process group: a terminal's Ctrl-C reaches bringup only
        )
        assert process.stdout is not None
        forwarder = threading.Thread(
            target=self._forward, args=(spec.name, process.stdout), name=f"out-{spec.name}", daemon=True
        )
        forwarder.start()
        self.say(f"started {spec.name} (pid {process.pid}): {' '.join(command[1:])}")
        return process, forwarder

    def start(self) -> None:
        for spec, command in self.commands:
            process, forwarder = self._spawn(spec, command)
            self.children.append(Child(spec, command, process, forwarder))

    def wait(self) -> None:
        """Until the required node exits, every node has exited for good, or a signal arrives; restarts dead
        nodes marked ``respawn`` meanwhile."""
        while not self.signals.count:
            for child in self.children:
                if child.process.poll() is not None and not child.reported:
                    child.reported = True
                    code = exit_code(child.process.returncode)
                    self.say(f"{child.name} exited with code {code}")
                    if child.spec.required:
                        return
                    self._schedule_respawn(child, code)
                if child.respawn_at is not None and time.monotonic() >= child.respawn_at:
                    child.respawn_at = None
                    child.forwarder.join(5.0)
                    child.process, child.forwarder = self._spawn(child.spec, child.command)
                    child.reported = False
            if all(c.process.poll() is not None and c.respawn_at is None for c in self.children):
                return
            time.sleep(POLL_PERIOD)
        self.say(f"received {signal.Signals(self.signals.last).name}: stopping the stack")

    def _schedule_respawn(self, child: Child, code: int) -> None:
        if not child.spec.respawn or code in NO_RESPAWN_CODES:
            return
        if child.respawns >= MAX_RESPAWNS:
            self.say(f"not respawning {child.name}: it died {child.respawns + 1} times")
            return
        delay = RESPAWN_DELAY * 2**child.respawns
        child.respawns += 1
        child.respawn_at = time.monotonic() + delay
        self.say(f"respawning {child.name} in {delay:g} s ({child.respawns}/{MAX_RESPAWNS})")

    def stop(self) -> None:
        """SIGINT every child's process group, then SIGTERM, then SIGKILL, each after its timeout."""
        signals_before = self.signals.count
        for signum, timeout in (
            (signal.SIGINT, self.sigint_timeout),
            (signal.SIGTERM, self.sigterm_timeout),
            (signal.SIGKILL, 10.0),
        ):
            alive = [c for c in self.children if c.process.poll() is None]
            if not alive:
                break
            if signum != signal.SIGINT:
                self.say(f"sending {signum.name} to {', '.join(c.name for c in alive)}")
            for child in alive:
                with contextlib.suppress(ProcessLookupError):  # already gone
                    os.killpg(child.process.pid, signum)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and any(c.process.poll() is None for c in alive):
                if signum == signal.SIGINT and self.signals.count > signals_before + 1:
                    break  # a second Ctrl-C: no more grace
                time.sleep(POLL_PERIOD)
        for child in self.children:
            child.process.wait()
            child.forwarder.join(5.0)
            if not child.reported:
                child.reported = True
                self.say(f"{child.name} exited with code {exit_code(child.process.returncode)}")

    def required_exit_code(self) -> int:
        codes = [exit_code(c.process.returncode) for c in self.children if c.spec.required]
        return codes[0] if codes else 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mirror_bringup",
        description="Start sim_bridge, policy, perception and mirror_loop (= ros2 launch mirror_policy "
        "sim.launch.py) and stop them all on exit or Ctrl-C.",
    )
    for argument in LAUNCH_ARGUMENTS:
        parser.add_argument(f"--{argument.name}", type=argument.type, default=None, help=argument.description)
    parser.add_argument(
        "--params-file",
        type=Path,
        default=None,
        help=f"ROS 2 parameter file (default {default_params_file()})",
    )
    parser.add_argument("--sigint-timeout", type=float, default=20.0, help="s before SIGTERM on shutdown")
    parser.add_argument("--sigterm-timeout", type=float, default=5.0, help="s before SIGKILL on shutdown")
    return parser.parse_args(argv)


def check_checkpoint(params: dict[str, dict], override: str | None) -> Path:
    """The checkpoint the model nodes will load, checked before spending a minute starting them."""
    value = override if override is not None else params["policy"].get("checkpoint", DEFAULT_CHECKPOINT)
    path = resolve_data_path(str(value))
    if not (path / "config.json").is_file():
        raise ParamsFileError(
            f"checkpoint {path} is not a MirrorModel checkpoint directory (no config.json); train one with "
            "train_joint or pass --checkpoint <dir>"
        )
    return path


@console_main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    follow_parent()  # started by a test run or a supervisor that set MIRROR_PARENT_PID: die with it
    out = sys.stdout
    params_file = (args.params_file or default_params_file()).resolve()
    arguments = {a.name: getattr(args, a.name) for a in LAUNCH_ARGUMENTS if getattr(args, a.name) is not None}
    try:
        params = load_params_file(params_file)
        checkpoint = check_checkpoint(params, arguments.get("checkpoint"))
        for name in OUTPUT_ARGUMENTS:  # absolute, and usable, before a minute is spent starting the stack
            if arguments.get(name):
                arguments[name] = str(prepare_output_directory(arguments[name], f"--{name} directory"))
        commands = [(spec, node_command(spec, params_file, arguments)) for spec in NODES]
    except (ParamsFileError, ValueError) as err:
        out.write(f"[bringup] cannot start the stack: {err}\n")
        return EXIT_BAD_CONFIG
    env = child_environment() | {PARENT_PID_ENV: str(os.getpid())}  # the nodes die with bringup
    bringup = Bringup(commands, env, out, args.sigint_timeout, args.sigterm_timeout)
    for signum in STOP_SIGNALS:
        signal.signal(signum, bringup.signals)
    bringup.say(
        f"parameters {params_file}, checkpoint {checkpoint}, ROS_DOMAIN_ID={env.get('ROS_DOMAIN_ID', '0')}, "
        f"ROS_AUTOMATIC_DISCOVERY_RANGE={env['ROS_AUTOMATIC_DISCOVERY_RANGE']}"
    )
    for name in OUTPUT_ARGUMENTS:
        if arguments.get(name):
            bringup.say(f"{name}: {arguments[name]}")
    try:
        bringup.start()
        bringup.wait()
    finally:
        bringup.stop()
    code = bringup.required_exit_code()
    bringup.say(f"stack stopped; exit code {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
