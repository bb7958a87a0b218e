"""Generates scripted demonstrations in RLBench/PerAct layout with the embedded simulator.

    generate_demos --tasks push_buttons open_drawer --episodes-per-variation 2 --out data/train --processes 2

Each task gets a deterministic plan of episodes (variation, seed); episode ``k`` of the plan is written to
``<out>/<task>/all_variations/episodes/episode<k>/``. Episodes are written atomically, so re-running the same
command after an interruption skips what is complete and continues with the rest. A demo whose replay fails
(planning error or unmet success condition) is retried with a new seed, like RLBench's "bad demo" loop.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mirror_common.cli import console_main
from sim_bridge.backend import EpisodeInfo
from sim_bridge.bullet.env import BulletBackend
from sim_bridge.dataset import is_complete_episode, write_episode
from sim_bridge.dataset.layout import SEED_KEY, WAYPOINTS_KEY
from sim_bridge.errors import SimError, UnknownTaskError
from sim_bridge.observation import Observation

log = logging.getLogger("generate_demos")


@dataclass(frozen=True)
class EpisodeJob:
    task: str
    index: int
    variation: int
    seed: int
    directory: Path


def episode_dir(out: Path, task: str, index: int) -> Path:
    return out / task / "all_variations" / "episodes" / f"episode{index}"


def plan_episodes(
    out: Path, tasks: list[str], variations: dict[str, list[int]], per_variation: int, seed: int
) -> list[EpisodeJob]:
    """The full, deterministic list of episodes: every chosen variation ``per_variation`` times, in a
    seeded shuffled order per task (so a partial dataset still covers variations evenly)."""
    jobs = []
    for task in tasks:
        task_seed = seed * 1_000_003 + zlib.crc32(task.encode())
        order = np.random.default_rng(task_seed).permutation(np.repeat(variations[task], per_variation))
        for k, variation in enumerate(order):
            jobs.append(
                EpisodeJob(task, k, int(variation), task_seed % 2**31 + 7919 * k, episode_dir(out, task, k))
            )
    return jobs


_ENV = None


def _worker_env() -> BulletBackend:
    """One simulator per worker process, built on first use."""
    global _ENV
    if _ENV is None:
        _ENV = BulletBackend()
    return _ENV


@dataclass
class RecordedEpisode:
    info: EpisodeInfo
    frames: list[Observation]
    waypoint_frames: list[int]  # index of the frame that ends each scripted waypoint


class DemoFailedError(SimError):
    """The scripted demo ran to its end but the task's success condition is not met."""


def record_episode(env: BulletBackend, task: str, variation: int, seed: int) -> RecordedEpisode:
    """Reset and run the scripted demo; raises SimError if it cannot be planned or does not succeed."""
    info, _ = env.reset(task, variation, seed)
    frames = env.demo()
    if not env.success():
        raise DemoFailedError("demo finished without success")
    return RecordedEpisode(info, frames, list(env.demo_waypoint_frames))


def save_episode(directory: Path, episode: RecordedEpisode) -> None:
    """Write in RLBench layout; our seed and the waypoint frames go into frame 0's ``misc``, and numpy's
    legacy RNG state for that seed into ``Demo.random_seed`` (where RLBench keeps it)."""
    first = episode.frames[0]
    first.extra_misc[SEED_KEY] = episode.info.seed
    first.extra_misc[WAYPOINTS_KEY] = list(episode.waypoint_frames)
    legacy_state = np.random.RandomState(episode.info.seed % 2**32).get_state()
    write_episode(directory, episode.frames, episode.info.descriptions, episode.info.variation, legacy_state)


def run_job(job: EpisodeJob, attempts: int) -> tuple[EpisodeJob, str, str, float, int]:
    """Record and write one episode; returns (job, status, detail, seconds, frames)."""
    start = time.perf_counter()
    env = _worker_env()
    last_error = ""
    for attempt in range(attempts):
        seed = job.seed + 104_729 * attempt
        try:
            episode = record_episode(env, job.task, job.variation, seed)
        except SimError as err:
            last_error = f"seed {seed}: {type(err).__name__}: {err}"
            continue
        save_episode(job.directory, episode)
        return job, "written", f"attempt {attempt + 1}", time.perf_counter() - start, len(episode.frames)
    return job, "failed", last_error, time.perf_counter() - start, 0


def _run_job_star(args: tuple[EpisodeJob, int]):
    return run_job(*args)


def _parse_variations(spec: str, counts: dict[str, int]) -> dict[str, list[int]]:
    out = {}
    for task, count in counts.items():
        if spec == "all":
            out[task] = list(range(count))
            continue
        chosen = [int(v) for v in spec.split(",")]
        bad = [v for v in chosen if not 0 <= v < count]
        if bad:
            raise SystemExit(f"error: task {task} has variations 0..{count - 1}; got {bad}")
        out[task] = chosen
    return out


@console_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="*", help="RLBench task names (default: every embedded task)")
    parser.add_argument("--variations", default="all", help="'all' or a comma list of variation indices")
    parser.add_argument("--episodes-per-variation", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="dataset root (RLBench/PerAct layout)")
    parser.add_argument("--processes", type=int, default=1, help="simulator processes (one per core)")
    parser.add_argument("--attempts", type=int, default=5, help="seeds tried per episode before giving up")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from sim_bridge.tasks import TASKS, make_task

    names = args.tasks or sorted(TASKS)
    try:
        counts = {t: make_task(t).variation_count() for t in names}
    except UnknownTaskError as err:
        parser.error(str(err))
    variations = _parse_variations(args.variations, counts)
    jobs = plan_episodes(args.out, names, variations, args.episodes_per_variation, args.seed)
    todo = [j for j in jobs if not is_complete_episode(j.directory)]
    log.info(
        "%d episodes planned, %d already complete, %d to record", len(jobs), len(jobs) - len(todo), len(todo)
    )
    status: Counter = Counter()
    failures = []
    seconds = 0.0
    started = time.perf_counter()
    work = [(j, args.attempts) for j in todo]
    with tqdm(total=len(todo), desc="episodes", unit="ep") as bar:
        if args.processes > 1:
            with mp.get_context("spawn").Pool(args.processes) as pool:
                results = pool.imap_unordered(_run_job_star, work)
                for result in results:
                    seconds += _account(result, status, failures, bar)
        else:
            for item in work:
                seconds += _account(_run_job_star(item), status, failures, bar)
    elapsed = time.perf_counter() - started
    for f in failures:
        log.warning("failed: %s", f)
    per_min = 60.0 * status["written"] / elapsed if elapsed > 0 else 0.0
    log.info(
        "written %d, failed %d, skipped %d in %.1f s (%.1f episodes/min overall, %.1f s/episode per process)",
        status["written"], status["failed"], len(jobs) - len(todo), elapsed, per_min,
        seconds / max(status["written"] + status["failed"], 1),
    )  # fmt: skip
    return 1 if status["failed"] else 0


def _account(result, status: Counter, failures: list, bar) -> float:
    """Tally one finished job; returns the seconds it took."""
    job, state, detail, sec, _ = result
    status[state] += 1
    if state == "failed":
        failures.append(f"{job.task} episode{job.index} (variation {job.variation}): {detail}")
    bar.set_postfix(task=job.task, written=status["written"], failed=status["failed"])
    bar.update(1)
    return sec


if __name__ == "__main__":
    sys.exit(main())
