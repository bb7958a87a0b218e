"""How robust is each task to imperfect keyframes? Replays the scripted expert keyframes with Gaussian noise.

    keyframe_noise --tasks open_drawer push_buttons turn_tap --episodes 10 \\
        --position-cm 0 0.5 1 2 4 --rotation-deg 0 5 10 --out eval/noise

Every scripted waypoint of a seeded episode is perturbed (position: N(0, sigma) per axis; orientation: a
rotation vector with N(0, sigma) per axis) and sent through ``step``, exactly as a policy's keyframe would be
(no "linear" hint, the gripper and collision flags unchanged). A policy that is within the noise of the
expert can at best reach the success rate measured here, so the table separates what the simulator and
planner refuse ("planning": no IK solution, colliding target, no path) from what the task itself does not
survive ("task": the success condition is unmet after the last keyframe).

Writes ``noise_summary.csv`` (one row per task and noise level, with counts per failure category) and
``noise_failures.csv`` (one row per failed episode with its reason) into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import logging
import multiprocessing as mp
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from mirror_common.cli import console_main
from sim_bridge.actions import KeyframeAction
from sim_bridge.bullet.env import BulletBackend
from sim_bridge.errors import InvalidActionError, PlanningError, SimError, UnknownTaskError

log = logging.getLogger("keyframe_noise")

# Scenes of this diagnostic never coincide with generate_demos' seeds (< 2**31 + 7919 * k) or evaluate's.
SEED_BASE = 5 * 2**30


@dataclass(frozen=True)
class NoiseLevel:
    position_cm: float
    rotation_deg: float

    def __post_init__(self) -> None:
        if not (self.position_cm >= 0 and self.rotation_deg >= 0):
            raise ValueError(f"noise must be >= 0, got {self.position_cm} cm / {self.rotation_deg} deg")


@dataclass(frozen=True)
class NoisyEpisode:
    task: str
    variation: int
    seed: int
    position_cm: float
    rotation_deg: float
    success: bool
    category: str  # "" on success, else "planning", "invalid_action", "task" or "error"
    reason: str
    keyframes: int


def perturb(action: KeyframeAction, level: NoiseLevel, rng: np.random.Generator) -> KeyframeAction:
    """``action`` with Gaussian position and orientation noise; gripper and collision flags unchanged."""
    position = action.position + rng.normal(0.0, level.position_cm / 100.0, size=3)
    rotvec = rng.normal(0.0, np.radians(level.rotation_deg), size=3)
    rotation = Rotation.from_rotvec(rotvec) * Rotation.from_quat(action.quaternion)
    return KeyframeAction(position, rotation.as_quat(), action.gripper_open, action.ignore_collisions)


def failure_category(err: SimError) -> str:
    if isinstance(err, PlanningError):
        return "planning"
    if isinstance(err, InvalidActionError):
        return "invalid_action"
    return "error"


def run_noisy_episode(
    env: BulletBackend, task: str, variation: int, seed: int, level: NoiseLevel
) -> NoisyEpisode:
    """Reset ``task`` with ``seed`` and step through its scripted keyframes, each perturbed by ``level``.

    The noise generator is seeded by the scene seed alone, so the same episode at two noise levels sees
    the same standard-normal draws, scaled: a comparison across levels is paired.
    """
    env.reset(task, variation, seed)
    task_obj = env.task
    assert task_obj is not None
    rng = np.random.default_rng(seed)
    done = 0
    outcome = {"success": False, "category": "task", "reason": "success condition not met"}
    try:
        for waypoint in task_obj.demo():
            step = env.step(perturb(waypoint.action(), level, rng))
            done += 1
            if step.success:
                break
        if env.success():
            outcome = {"success": True, "category": "", "reason": ""}
    except SimError as err:
        where = f"keyframe {done + 1}"
        outcome = {"success": False, "category": failure_category(err), "reason": f"{where}: {err}"}
    return NoisyEpisode(
        task, variation, seed, level.position_cm, level.rotation_deg, keyframes=done, **outcome
    )


_ENV: BulletBackend | None = None


def _job(args: tuple[str, int, int, NoiseLevel]) -> NoisyEpisode:
    global _ENV
    if _ENV is None:
        _ENV = BulletBackend()
    return run_noisy_episode(_ENV, *args)


def plan_jobs(
    tasks: list[str], variation_counts: dict[str, int], episodes: int, levels: list[NoiseLevel], seed: int
) -> list[tuple[str, int, int, NoiseLevel]]:
    """(task, variation, scene seed, level) for every episode; variations cycle, levels share scenes."""
    jobs = []
    for task, level, k in itertools.product(tasks, levels, range(episodes)):
        jobs.append((task, k % variation_counts[task], SEED_BASE + seed * 2**16 + k, level))
    return jobs


CATEGORIES = ("planning", "invalid_action", "task", "error")


def summarize(results: list[NoisyEpisode]) -> list[dict]:
    """One row per (task, noise level): episodes, successes, rate and failures per category."""
    groups: dict[tuple[str, float, float], list[NoisyEpisode]] = {}
    for r in results:
        groups.setdefault((r.task, r.position_cm, r.rotation_deg), []).append(r)
    rows = []
    for (task, pos, rot), group in sorted(groups.items()):
        counts = Counter(r.category for r in group if not r.success)
        successes = sum(r.success for r in group)
        rows.append(
            {
                "task": task,
                "position_cm": pos,
                "rotation_deg": rot,
                "episodes": len(group),
                "successes": successes,
                "success_rate": successes / len(group),
                **{f"failed_{c}": counts.get(c, 0) for c in CATEGORIES},
            }
        )
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        if not rows:
            return
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def format_table(rows: list[dict]) -> str:
    columns = ("pos cm", 6), ("rot deg", 7), ("success", 9), ("planning", 8), ("task", 5), ("other", 5)
    lines = [f"{'task':<30} " + " ".join(f"{name:>{width}}" for name, width in columns)]
    for r in rows:
        other = r["failed_invalid_action"] + r["failed_error"]
        lines.append(
            f"{r['task']:<30} {r['position_cm']:>6g} {r['rotation_deg']:>7g} "
            f"{r['successes']:>4}/{r['episodes']:<4} {r['failed_planning']:>8} "
            f"{r['failed_task']:>5} {other:>5}"
        )
    return "\n".join(lines)


@console_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", required=True, help="RLBench task names")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task and noise level")
    parser.add_argument("--position-cm", nargs="+", type=float, default=[0.0, 0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--rotation-deg", nargs="+", type=float, default=[0.0, 5.0, 10.0])
    parser.add_argument(
        "--levels", nargs="+", metavar="CM:DEG",
        help="explicit noise levels instead of the grid of --position-cm x --rotation-deg, e.g. 0:0 0.5:5",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=1, help="simulator processes (one per core)")
    parser.add_argument("--out", type=Path, help="folder for noise_summary.csv and noise_failures.csv")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    try:
        if args.levels:
            levels = [NoiseLevel(*(float(x) for x in spec.split(":"))) for spec in args.levels]
        else:
            levels = [NoiseLevel(p, r) for p, r in itertools.product(args.position_cm, args.rotation_deg)]
    except (TypeError, ValueError) as err:
        parser.error(f"bad noise level: {err}")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a folder")

    from sim_bridge.tasks import make_task

    try:
        counts = {t: make_task(t).variation_count() for t in args.tasks}
    except UnknownTaskError as err:
        parser.error(str(err))
    jobs = plan_jobs(args.tasks, counts, args.episodes, levels, args.seed)
    results: list[NoisyEpisode] = []
    with tqdm(total=len(jobs), desc="noisy episodes", unit="ep") as bar:
        if args.processes > 1:
            with mp.get_context("spawn").Pool(args.processes) as pool:
                for result in pool.imap_unordered(_job, jobs):
                    results.append(result)
                    bar.update()
        else:
            for job in jobs:
                results.append(_job(job))
                bar.update()
    rows = summarize(results)
    failures = sorted((r for r in results if not r.success), key=lambda r: (r.task, r.position_cm, r.seed))
    for r in failures:
        log.info("%s %g cm %g deg seed %d: [%s] %s", r.task, r.position_cm, r.rotation_deg, r.seed,
                 r.category, r.reason)  # fmt: skip
    log.info("%s", format_table(rows))
    if args.out is not None:
        write_csv(args.out / "noise_summary.csv", rows)
        write_csv(args.out / "noise_failures.csv", [asdict(r) for r in failures])
        log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
