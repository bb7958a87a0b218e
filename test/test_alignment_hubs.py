"""alignment_hubs: retrieval concentration from evaluate's saved embeddings, consistent with its Recall@1."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from mirror.evaluation.alignment_hubs import main
from mirror.evaluation.alignment_metrics import AlignmentPairs, alignment_metrics
from mirror.evaluation.runner import _save_embeddings


def pairs(z_u: np.ndarray, z_e: np.ndarray, instructions: list[str]) -> AlignmentPairs:
    n = len(instructions)
    z_u = z_u / np.linalg.norm(z_u, axis=1, keepdims=True)
    z_e = z_e / np.linalg.norm(z_e, axis=1, keepdims=True)
    return AlignmentPairs(z_u, z_e, ["task"] * n, list(range(n)), instructions, [0] * n)


def run(tmp_path: Path, *saved: AlignmentPairs) -> dict[tuple[str, str, str], dict]:
    paths = [_save_embeddings(tmp_path, f"model{i}", p) for i, p in enumerate(saved)]
    assert main([*map(str, paths), "--out", str(tmp_path / "hubs.csv"), "--top", "1"]) == 0
    with (tmp_path / "hubs.csv").open() as handle:
        return {(r["model"], r["direction"], r["instruction"]): r for r in csv.DictReader(handle)}


def test_hits_and_recall_match_evaluate_on_the_same_pairs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    instructions = [f"instruction {i % 4}" for i in range(40)]
    shared = rng.normal(size=(4, 16))
    z_u = shared[[i % 4 for i in range(40)]] + rng.normal(scale=1.5, size=(40, 16))
    z_e = shared[[i % 4 for i in range(40)]] + rng.normal(scale=1.5, size=(40, 16))
    saved = pairs(z_u, z_e, instructions)
    rows = run(tmp_path, saved)
    recall = alignment_metrics(saved)["instruction"]
    for direction in ("u_to_e", "e_to_u"):
        row = rows[("model0", direction, "all")]
        assert int(row["queries"]) == 40
        assert float(row["recall_at_1"]) == pytest.approx(recall[direction], abs=1e-4)
        per_instruction = [r for k, r in rows.items() if k[1] == direction and k[2] != "all"]
        assert sum(int(r["hits"]) for r in per_instruction) == int(row["hits"])


def test_one_hub_carrying_an_instruction_is_seen(tmp_path: Path) -> None:
    """Every query retrieves target 0 (instruction a): a's queries all hit, through one target."""
    z_e = np.eye(6)[:4] * 0.1
    z_e[0] = [1, 1, 1, 1, 1, 1]
    z_u = np.ones((4, 6)) + np.eye(6)[:4] * 0.01
    rows = run(tmp_path, pairs(z_u, z_e, ["a", "a", "b", "c"]))
    overall = rows[("model0", "u_to_e", "all")]
    assert (overall["hits"], overall["distinct_targets"], overall["top_targets_share"]) == ("2", "1", "1.0")
    assert rows[("model0", "u_to_e", "a")]["distinct_targets"] == "1"
    assert ("model0", "u_to_e", "b") not in rows  # no hits, no row


def test_a_file_that_is_not_evaluate_embeddings_is_refused(tmp_path: Path, caplog) -> None:
    bad = tmp_path / "aligned_embeddings_bad.npz"
    np.savez(bad, z_u=np.ones((3, 2)))
    assert main([str(bad), "--out", str(tmp_path / "hubs.csv")]) == 2
    assert "not an evaluate embeddings file" in caplog.text and not (tmp_path / "hubs.csv").exists()
    (tmp_path / "aligned_embeddings_trunc.npz").write_bytes(b"PK\x03\x04 broken")
    assert main([str(tmp_path / "aligned_embeddings_trunc.npz"), "--out", str(tmp_path / "hubs.csv")]) == 2
