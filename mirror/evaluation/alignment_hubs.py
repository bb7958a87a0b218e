"""``alignment_hubs``: how concentrated a model's Recall@1 retrievals are (from ``evaluate``'s embeddings).

Recall@1 in a high-dimensional shared space can be carried by *hubs*: a few targets that are the nearest
neighbour of many queries. A hub of one instruction then turns every query of that instruction into a hit
at once, whatever the rest of the geometry, so a Recall@1 figure says more beside how many distinct targets
the queries retrieve and where its hits come from. For each ``aligned_embeddings_<model>.npz`` (the held-out
pairs through the heads as trained, written by ``evaluate``) this writes, per retrieval direction:

* one ``all`` row: queries, hits (instruction pairing), distinct targets retrieved, the share of queries
  whose nearest neighbour is one of the ``--top`` most retrieved targets;
* one row per instruction with hits: its queries, hits and the distinct targets those hits land on (1: one
  hub of that instruction carries all of them).

A pair is a clip and one of its keyframes, so a clip's video embedding repeats once per keyframe: u->e has
one query per pair but only one distinct query per clip, and e->u's targets are in effect the clips.

    alignment_hubs runs/study/*/eval/aligned_embeddings_*.npz --out docs/results/alignment_hubs.csv
"""

from __future__ import annotations

import argparse
import logging
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mirror.alignment import cosine_similarity_matrix
from mirror.evaluation.errors import EvaluationError
from mirror.evaluation.reporting import write_csv
from mirror_common.cli import console_main

log = logging.getLogger("alignment_hubs")

EMBEDDINGS_PREFIX = "aligned_embeddings_"
ALL = "all"
COLUMNS = (
    "model", "direction", "instruction", "queries", "hits", "recall_at_1", "distinct_targets",
    "top_targets_share",
)  # fmt: skip


def top_targets_share(retrieved: np.ndarray, top: int) -> float:
    """Share of queries whose nearest neighbour is one of the ``top`` most often retrieved targets."""
    counts = np.sort(np.bincount(retrieved))[::-1]
    return float(counts[:top].sum() / len(retrieved))


def concentration_rows(
    model: str, retrieved: np.ndarray, instructions: np.ndarray, direction: str, top: int
) -> list[dict]:
    """The ``all`` row and one row per instruction with hits, for one retrieval direction (``retrieved``:
    each query's nearest target)."""
    hits = instructions[retrieved] == instructions
    rows = [{
        "model": model, "direction": direction, "instruction": ALL, "queries": len(retrieved),
        "hits": int(hits.sum()), "recall_at_1": round(float(hits.mean()), 4),
        "distinct_targets": len(np.unique(retrieved)),
        "top_targets_share": round(top_targets_share(retrieved, top), 4),
    }]  # fmt: skip
    for instruction in sorted(set(instructions[hits])):
        mine = instructions == instruction
        rows.append({
            "model": model, "direction": direction, "instruction": instruction, "queries": int(mine.sum()),
            "hits": int((hits & mine).sum()), "recall_at_1": round(float(hits[mine].mean()), 4),
            "distinct_targets": len(np.unique(retrieved[hits & mine])), "top_targets_share": "",
        })  # fmt: skip
    return rows


def model_rows(path: Path, top: int) -> list[dict]:
    """Both directions' rows of one saved ``aligned_embeddings_<model>.npz``."""
    model = path.stem.removeprefix(EMBEDDINGS_PREFIX)
    try:
        with np.load(path) as data:
            z_u, z_e, instructions = data["z_u"], data["z_e"], data["instructions"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise EvaluationError(f"{path}: not an evaluate embeddings file ({err})") from err
    if z_u.ndim != 2 or z_u.shape[0] != z_e.shape[0] or z_u.shape[0] != len(instructions) or not len(z_u):
        raise EvaluationError(f"{path}: z_u {z_u.shape}, z_e {z_e.shape}, {len(instructions)} instructions")
    sims = cosine_similarity_matrix(torch.from_numpy(z_u), torch.from_numpy(z_e))  # as Recall@1 retrieves
    retrieved = {"u_to_e": sims.argmax(dim=1).numpy(), "e_to_u": sims.argmax(dim=0).numpy()}
    return [
        row
        for direction, nearest in retrieved.items()
        for row in concentration_rows(model, nearest, instructions, direction, top)
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("embeddings", type=Path, nargs="+", help="evaluate's aligned_embeddings_<model>.npz")
    parser.add_argument("--out", type=Path, required=True, help="the CSV to write")
    parser.add_argument("--top", type=int, default=5, help="most retrieved targets in top_targets_share")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error("--top must be >= 1")
    return args


@console_main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        rows = [row for path in args.embeddings for row in model_rows(path, args.top)]
    except EvaluationError as err:
        log.error("%s", err)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(args.out, COLUMNS, rows)
    for row in rows:
        if row["instruction"] == ALL:
            log.info("%s %s: %d/%d hits, %d distinct targets, top %d take %.0f%%", row["model"],
                     row["direction"], row["hits"], row["queries"], row["distinct_targets"], args.top,
                     100 * row["top_targets_share"])  # fmt: skip
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
