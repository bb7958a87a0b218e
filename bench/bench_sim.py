"""Simulator benchmark: 4-camera render rate, demo episodes per minute, planning time per keyframe.

    .venv/bin/python bench/bench_sim.py [--episodes 5] [--tasks push_buttons ...]

Run it on a quiet machine: every figure is wall-clock, one process, one core. Targets (issue #2):
>= 30 four-camera RGB-D frames/s; a full push_buttons demo episode in under 10 s.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from sim_bridge.bullet.env import BulletBackend
from sim_bridge.scripts.generate_demos import record_episode, save_episode


def bench_render(env: BulletBackend, frames: int) -> float:
    env.reset("push_buttons", 0, seed=0)
    tip = env.robot.tip_pose()
    env.rig.render(tip)  # warm-up
    start = time.perf_counter()
    for _ in range(frames):
        env.rig.render(tip)
    return frames / (time.perf_counter() - start)


def bench_demos(env: BulletBackend, task: str, episodes: int, out: Path) -> dict[str, float]:
    record_s, write_s, frames, planning, executing = [], [], [], [], []
    for k in range(episodes):
        start = time.perf_counter()
        episode = record_episode(env, task, k % env.variation_count(task), seed=1000 + k)
        recorded = time.perf_counter()
        save_episode(out / task / "all_variations" / "episodes" / f"episode{k}", episode)
        write_s.append(time.perf_counter() - recorded)
        record_s.append(recorded - start)
        frames.append(len(episode.frames))
        planning += [s.planning_seconds for s in env.demo_steps]
        executing += [s.execution_seconds for s in env.demo_steps]
    total = np.array(record_s) + np.array(write_s)
    return {
        "episode_s": float(np.mean(total)),
        "record_s": float(np.mean(record_s)),
        "write_s": float(np.mean(write_s)),
        "episodes_per_min": 60.0 / float(np.mean(total)),
        "frames": float(np.mean(frames)),
        "plan_median_ms": 1000 * float(np.median(planning)),
        "plan_max_ms": 1000 * float(np.max(planning)),
        "keyframes": len(planning) / episodes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--render-frames", type=int, default=200)
    parser.add_argument("--tasks", nargs="*", default=["push_buttons"])
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    env = BulletBackend()
    fps = bench_render(env, args.render_frames)
    print(f"render: {fps:.1f} four-camera RGB-D+mask frames/s at 128x128 ({1000 / fps:.1f} ms/frame)")
    print(f"{'task':28s} {'s/episode':>9s} {'record':>7s} {'write':>6s} {'ep/min':>7s} {'frames':>7s} "
          f"{'keyframes':>9s} {'plan med ms':>11s} {'plan max ms':>11s}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            r = bench_demos(env, task, args.episodes, Path(tmp))
            print(
                f"{task:28s} {r['episode_s']:9.2f} {r['record_s']:7.2f} {r['write_s']:6.2f} "
                f"{r['episodes_per_min']:7.1f} {r['frames']:7.0f} {r['keyframes']:9.1f} "
                f"{r['plan_median_ms']:11.0f} {r['plan_max_ms']:11.0f}"
            )
    env.close()


if __name__ == "__main__":
    main()
