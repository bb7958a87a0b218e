"""Replays every task's scripted demonstration over seeded episodes and prints the success table.

    replay_demos --episodes 20 --tasks push_buttons open_drawer

Variations cycle through each task's range; the process exits non-zero if any task falls below
``--min-success``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from tqdm import tqdm

from mirror_common.cli import console_main
from sim_bridge.bullet.env import BulletBackend
from sim_bridge.errors import SimError

log = logging.getLogger("replay_demos")


def replay(env: BulletBackend, task: str, episodes: int, seed: int) -> tuple[int, float, list[str]]:
    """(successes, mean seconds per episode, failure reasons) for ``episodes`` seeded demos of ``task``."""
    successes, seconds, failures = 0, 0.0, []
    variations = env.variation_count(task)
    for k in tqdm(range(episodes), desc=task, leave=False):
        variation, episode_seed = k % variations, seed + k
        start = time.perf_counter()
        try:
            env.reset(task, variation, episode_seed)
            env.demo()
            ok = env.success()
            reason = "success condition not met"
        except SimError as err:
            ok, reason = False, f"{type(err).__name__}: {err}"
        seconds += time.perf_counter() - start
        successes += ok
        if not ok:
            failures.append(f"seed {episode_seed} variation {variation}: {reason}")
    return successes, seconds / max(episodes, 1), failures


@console_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="*", help="task names (default: all registered)")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-success", type=float, default=0.95)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    env = BulletBackend()
    tasks = args.tasks or env.task_names()
    worst = 1.0
    rows = []
    for task in tasks:
        ok, sec, failures = replay(env, task, args.episodes, args.seed)
        rate = ok / args.episodes
        worst = min(worst, rate)
        rows.append((task, ok, rate, sec))
        for f in failures:
            log.info("  %s failed: %s", task, f)
    env.close()
    log.info("%-32s %9s %8s %12s", "task", "success", "rate", "s/episode")
    for task, ok, rate, sec in rows:
        log.info("%-32s %4d/%-4d %7.0f%% %12.1f", task, ok, args.episodes, 100 * rate, sec)
    return 0 if worst >= args.min_success else 1


if __name__ == "__main__":
    sys.exit(main())
