"""Summarises an RLBench/PerAct-layout dataset (ours or RLBench's): episodes per task, frames, keyframes
and instructions, reading everything through the restricted loader.

    python -m sim_bridge.scripts.inspect_dataset data/demos
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import defaultdict
from pathlib import Path

from mirror_common.cli import console_main
from sim_bridge.dataset import RLBenchDataset, discover_keyframes, load_episode
from sim_bridge.errors import DatasetError

log = logging.getLogger("inspect_dataset")


@console_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        dataset = RLBenchDataset(args.root)
    except DatasetError as err:
        log.error("error: %s", err)
        return 2
    rows: dict[str, list] = defaultdict(list)
    for record in dataset:
        episode = load_episode(record, cameras=("front",), frames=[0])
        full = load_episode(record, cameras=()) if record.length else episode
        rows[record.task].append(
            (record, len(discover_keyframes(full.observations)), episode.descriptions[0])
        )
    log.info("%-30s %8s %10s %10s  first instruction", "task", "episodes", "frames/ep", "keyframes")
    for task, items in sorted(rows.items()):
        frames = sum(r.length for r, _, _ in items) / len(items)
        keyframes = sum(k for _, k, _ in items) / len(items)
        log.info("%-30s %8d %10.0f %10.1f  %s", task, len(items), frames, keyframes, items[0][2])
    for path, reason in dataset.skipped:
        log.warning("skipped %s: %s", path, reason)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
