"""ROS 2 camera streaming benchmark: the bridge in one process, a synchronising subscriber in this one.

    .venv/bin/python bench/bench_ros_streaming.py [--rate 30] [--seconds 10] [--executor single|events]
                                                  [--rerender] [--domain-id 172]

The bridge (``python -m sim_bridge.ros.bridge_node``) streams idle camera sets at ``--rate`` Hz; with
``--rerender`` it renders every set instead of re-publishing the last render. This process subscribes to all
16 camera topics with :class:`CameraSetSynchronizer` and reports, over the measured window (after discovery
and a warm-up): achieved set rate, sets seen on the wire but never completed, synchroniser drops, set latency
(receive wall clock - stamp) mean/p50/p99/max, and CPU use of both processes. Targets: >= 30 Hz, no dropped
sets, p99 < 10 ms. DDS stays on loopback (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST).
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_bridge(rate: float, rerender: bool) -> subprocess.Popen:
    rerender_value = "true" if rerender else "false"
    cmd = [sys.executable, "-m", "sim_bridge.ros.bridge_node", "--ros-args",
           "-p", f"publish_rate:={rate}", "-p", f"idle_rerender:={rerender_value}"]  # fmt: skip
    return subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop_bridge(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=30.0, help="bridge publish rate, Hz")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds after the first set, not measured")
    parser.add_argument("--executor", choices=("single", "events"), default="single")
    parser.add_argument("--rerender", action="store_true", help="render every idle set in the bridge")
    parser.add_argument("--domain-id", type=int, default=172)
    args = parser.parse_args()

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # before rclpy.init; the bridge inherits it
    os.environ["ROS_DOMAIN_ID"] = str(args.domain_id)

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from sim_bridge.ros.messages import stamp_to_ns
    from sim_bridge.ros.observation_sync import CameraSet, CameraSetSynchronizer, subscribe_camera_sets

    bridge = start_bridge(args.rate, args.rerender)
    rclpy.init()
    node = rclpy.create_node("bench_ros_streaming")
    sets: list[CameraSet] = []
    sync = CameraSetSynchronizer(on_set=sets.append)
    seen_stamps: set[int] = set()
    add = sync.add

    def add_and_record(camera: str, kind: str, msg: object) -> CameraSet | None:
        seen_stamps.add(stamp_to_ns(msg.header.stamp))  # type: ignore[attr-defined]
        return add(camera, kind, msg)

    sync.add = add_and_record  # type: ignore[method-assign]
    subscribe_camera_sets(node, sync)
    if args.executor == "events":
        from rclpy.experimental import EventsExecutor

        executor = EventsExecutor()
    else:
        executor = SingleThreadedExecutor()
    executor.add_node(node)

    def spin_for(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)

    try:
        started = time.monotonic()
        while not sets:
            if time.monotonic() - started > 60 or bridge.poll() is not None:
                raise SystemExit(f"no camera set within 60 s (missing: {sync.describe_missing()})")
            executor.spin_once(timeout_sec=0.05)
        discovery = time.monotonic() - started
        spin_for(args.warmup)

        first_set, stats0 = len(sets), vars(sync.stats).copy()
        seen_stamps.clear()
        cpu_sub0, cpu_bridge0, wall0 = own_cpu_seconds(), process_cpu_seconds(bridge.pid), time.monotonic()
        window_start_ns = node.get_clock().now().nanoseconds
        spin_for(args.seconds)
        wall = time.monotonic() - wall0
        cpu_sub, cpu_bridge = own_cpu_seconds() - cpu_sub0, process_cpu_seconds(bridge.pid) - cpu_bridge0
        window_end_ns = node.get_clock().now().nanoseconds
        spin_for(0.3)  # let sets stamped inside the window finish arriving
        window = [s for s in sets[first_set:] if window_start_ns <= s.stamp_ns < window_end_ns]
        stats = {k: v - stats0[k] for k, v in vars(sync.stats).items()}
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        rc = stop_bridge(bridge)

    completed = {s.stamp_ns for s in window}
    incomplete = {t for t in seen_stamps if window_start_ns <= t < window_end_ns} - completed
    latency_ms = np.array([s.latency for s in window]) * 1e3
    stamps = np.array(sorted(completed)) * 1e-9
    gaps = np.diff(stamps) if len(stamps) > 1 else np.zeros(1)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (other jobs share the machine)")
    mode = "render every set" if args.rerender else "re-publish the idle render"
    print(f"bridge: target {args.rate:g} Hz, {mode}; subscriber: {args.executor} executor; "
          f"discovery {discovery:.1f} s; window {wall:.1f} s")  # fmt: skip
    print(f"sets: {len(window)} complete = {len(window) / wall:.2f} Hz; stamp interval mean "
          f"{1e3 * gaps.mean():.1f} ms, max {1e3 * gaps.max():.1f} ms")  # fmt: skip
    drops = ", ".join(f"{k} {stats[k]}" for k in ("dropped_incomplete", "stale", "malformed", "late"))
    print(f"incomplete sets seen on the wire: {len(incomplete)}; synchroniser counters: {drops}")
    if len(latency_ms):
        p50, p99 = np.percentile(latency_ms, [50, 99])
        print(f"set latency ms: mean {latency_ms.mean():.2f}, p50 {p50:.2f}, p99 {p99:.2f}, "
              f"max {latency_ms.max():.2f}")  # fmt: skip
    print(f"CPU: bridge {100 * cpu_bridge / wall:.0f}% of a core, subscriber {100 * cpu_sub / wall:.0f}%; "
          f"bridge exit code {rc}")  # fmt: skip


if __name__ == "__main__":
    main()
