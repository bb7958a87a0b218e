"""Planner benchmark on a pure-function 7-D problem: a joint-space wall with a narrow gap.

    .venv/bin/python bench/bench_planning.py [--trials 20] [--time-limit 5] [--step 0.5]

Prints median / max wall-clock and CPU planning time (CPU is the steadier figure on a shared machine),
validity checks, waypoints and path length for each planner, with and without simplification. The validity
function costs ~1 us here, so the checks column is the figure to carry over to a physics engine
(PyBullet: ~165-280 us per check, see research/sim.md section 2).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from sim_bridge.planning import RRTConnectConfig, ompl_available, plan_joint_path, straight_line_is_valid

DIM = 7
RESOLUTION = 0.03
WIDTHS = (8, 10, 20, 20, 20, 12)


class CountingWall:
    """Valid unless |q0| < 0.12 outside the window 0.42 < q1 < 0.88, -0.88 < q2 < -0.42 (the gap)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, q: np.ndarray) -> bool:
        self.calls += 1
        if abs(q[0]) >= 0.12:
            return True
        return bool(0.42 < q[1] < 0.88 and -0.88 < q[2] < -0.42)


def run(planner: str, simplify: bool, trials: int, time_limit: float, config: RRTConnectConfig) -> dict:
    start, goal = np.zeros(DIM), np.zeros(DIM)
    start[0], goal[0] = -1.0, 1.0
    lower, upper = -np.pi * np.ones(DIM), np.pi * np.ones(DIM)
    assert not straight_line_is_valid(start, goal, CountingWall(), RESOLUTION)
    seconds, cpu_seconds, checks, waypoints, lengths = [], [], [], [], []
    for seed in range(trials):
        wall = CountingWall()
        began, began_cpu = time.perf_counter(), time.process_time()
        path = plan_joint_path(
            start,
            goal,
            wall,
            lower,
            upper,
            time_limit=time_limit,
            resolution=RESOLUTION,
            seed=seed,
            simplify=simplify,
            planner=planner,
            rrt_config=config,
        )
        seconds.append(time.perf_counter() - began)
        cpu_seconds.append(time.process_time() - began_cpu)
        checks.append(wall.calls)
        waypoints.append(len(path))
        lengths.append(float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum()))
    return {
        "seconds": seconds,
        "cpu": cpu_seconds,
        "checks": checks,
        "waypoints": waypoints,
        "lengths": lengths,
    }


def summary(values: list[float], fmt: Callable[[float], str]) -> str:
    return f"{fmt(statistics.median(values))} / {fmt(max(values))}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--time-limit", type=float, default=5.0)
    parser.add_argument("--step", type=float, default=RRTConnectConfig().step, help="RRT extension (rad)")
    args = parser.parse_args()
    config = RRTConnectConfig(step=args.step)

    planners = ["numpy", "ompl"] if ompl_available() else ["numpy"]
    print(f"7-D wall with a gap, resolution {RESOLUTION} rad, step {args.step} rad, {args.trials} seeds")
    header = ["planner", "simplify", "wall ms med/max", "cpu ms med/max", "checks med/max", "waypoints"]
    print("".join(f"{h:<{w}}" for h, w in zip(header, WIDTHS)) + "length")
    for planner in planners:
        for simplify in (False, True):
            r = run(planner, simplify, args.trials, args.time_limit, config)
            print(
                f"{planner:<8}{simplify!s:<10}"
                f"{summary(r['seconds'], lambda s: f'{1000 * s:.1f}'):<20}"
                f"{summary(r['cpu'], lambda s: f'{1000 * s:.1f}'):<20}"
                f"{summary(r['checks'], lambda c: f'{c:.0f}'):<20}"
                f"{statistics.median(r['waypoints']):<12.0f}{statistics.median(r['lengths']):.2f}"
            )
    if not ompl_available():
        print("ompl is not installed: only the numpy planner was measured")


if __name__ == "__main__":
    main()
