"""evaluate --probe-steps: fresh heads trained on a frozen model and its training split; Recall@1 via them."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
import torch
from mirror_test_data import build_tiny_dataset, train_cli

from mirror.evaluation.errors import EvaluationError
from mirror.evaluation.evaluate import main as evaluate_main
from mirror.evaluation.probing import PROBES_DIR, probe_config
from mirror.model import MirrorModel
from mirror.training.train_joint import main as train_main


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A 2-step baseline run (align_weight 0: its heads never train, so only probing can judge them)."""
    out = tmp_path_factory.mktemp("runs") / "baseline"
    assert train_main(train_cli(build_tiny_dataset(), out, "--steps", "2", "--align-weight", "0")) == 0
    return out


def evaluate(run: Path, out: Path, *extra: str) -> dict:
    argv = ["--checkpoints", str(run), "--names", "baseline", "--out", str(out), "--skip-rollouts",
            "--probe-steps", "3", "--no-progress", *extra]  # fmt: skip
    assert evaluate_main(argv) == 0
    return json.loads((out / "results.json").read_text())


def test_probe_trains_only_the_heads_and_is_reported(run: Path, tmp_path: Path, caplog) -> None:
    results = evaluate(run, tmp_path / "eval")
    model = results["models"]["baseline"]
    probe = model["alignment_probe"]
    assert probe["probe_steps"] == 3 and probe["pairing"] == model["alignment"]["pairing"]
    for pairing in ("episode", "instruction", "class"):
        assert 0.0 <= probe[pairing]["u_to_e"] <= 1.0 and 0.0 <= probe[pairing]["e_to_u"] <= 1.0
    trained = MirrorModel.from_pretrained(run / "final").state_dict()
    probed = MirrorModel.from_pretrained(probe["model"]).state_dict()
    assert Path(probe["model"]).parent == tmp_path / "eval" / PROBES_DIR / "baseline"
    for name, value in probed.items():
        same = torch.equal(value, trained[name])
        assert same == (not name.startswith("alignment.")), name  # frozen encoders, new heads
    with (tmp_path / "eval" / "summary.csv").open() as handle:
        row = next(csv.DictReader(handle))
    assert row["probe_steps"] == "3"
    assert float(row["recall_at_1_u_to_e_probe_pct"]) == pytest.approx(
        100 * probe[probe["pairing"]]["u_to_e"], abs=0.01
    )
    caplog.set_level(logging.INFO)
    again = evaluate(run, tmp_path / "eval")  # a finished probe is reused, not retrained
    assert "reusing" in caplog.text
    assert again["models"]["baseline"]["alignment_probe"] == probe


def test_a_given_pairing_scores_and_trains_the_probe(run: Path, tmp_path: Path, caplog) -> None:
    """Models trained with different pairings are compared under one: the probe trains on it as well."""
    own = evaluate(run, tmp_path / "eval")["models"]["baseline"]
    assert own["alignment_probe"]["pairing"] == "instruction"  # the run's training pairing
    caplog.set_level(logging.INFO)
    probe = evaluate(run, tmp_path / "eval", "--pairing", "episode")["models"]["baseline"]["alignment_probe"]
    assert "replacing" in caplog.text  # the probe trained on instruction pairs is not reused
    assert probe["pairing"] == "episode"
    assert MirrorModel.read_extra(Path(probe["model"]))["train_config"]["alignment"]["pairing"] == "episode"
    with pytest.raises(EvaluationError, match="pairing"):
        probe_config(run / "final", 3, tmp_path / "p", None, "cpu", False, "pair")


def test_probe_needs_a_training_config_and_its_data(run: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    MirrorModel.from_pretrained(run / "final").save_pretrained(bare)
    with pytest.raises(EvaluationError, match="no training config"):
        probe_config(bare, 3, tmp_path / "p", None, "cpu", False)
    with pytest.raises(EvaluationError, match="--probe-data"):
        probe_config(run / "final", 3, tmp_path / "p", tmp_path / "gone", "cpu", False)
    config = probe_config(run / "final", 3, tmp_path / "p", None, "cpu", False)
    assert config.probe and config.align_weight > 0 and config.init == str(run / "final")
