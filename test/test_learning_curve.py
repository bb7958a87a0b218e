"""learning_curve's bookkeeping: which checkpoints a run holds, one CSV row per step, resumption, the plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mirror.evaluation.errors import EvaluationError
from mirror.evaluation.learning_curve import (
    CURVE_CSV_NAME,
    curve_row,
    learning_curve,
    plot_curve,
    read_curve,
    run_checkpoints,
    write_curve,
)
from mirror.evaluation.runner import EvaluationSettings


def _model_dir(path: Path, step: int) -> Path:
    path.mkdir(parents=True)
    (path / "extra.json").write_text(json.dumps({"step": step}))
    return path


def test_checkpoints_are_found_by_step_and_partial_ones_skipped(tmp_path: Path) -> None:
    run = tmp_path / "run"
    a = _model_dir(run / "checkpoints" / "step_00000500", 500)
    b = _model_dir(run / "checkpoints" / "step_00001000", 1000)
    (run / "checkpoints" / "step_00001500").mkdir()  # no extra.json: not a complete model
    final = _model_dir(run / "final", 1200)
    assert run_checkpoints(run) == [(500, a), (1000, b), (1200, final)]


RESULTS = {
    "recognition": {"overall": {"top1": 0.5}},
    "alignment": {"pairing": "instruction", "instruction": {"u_to_e": 0.25, "e_to_u": 0.125}},
    "execution": {
        "overall": {"success_mean": 0.4},
        "per_task": {"turn_tap": {"success_mean": 0.6}, "open_drawer": {"success_mean": 0.2}},
    },
}


def test_a_row_holds_every_metric_in_percent(tmp_path: Path) -> None:
    row = curve_row(1000, RESULTS, {"position_error_cm": 3.5})
    assert row == {
        "step": 1000, "recognition_top1_pct": 50.0, "recall_u2e_pct": 25.0, "recall_e2u_pct": 12.5,
        "success_mean_pct": 40.0, "success_open_drawer_pct": 20.0, "success_turn_tap_pct": 60.0,
        "position_error_cm": 3.5,
    }  # fmt: skip
    path = tmp_path / CURVE_CSV_NAME
    write_curve(path, [row, {"step": 500, "recognition_top1_pct": 25.0}])
    back = read_curve(path)
    assert [r["step"] for r in back] == [500.0, 1000.0]
    assert back[0]["success_mean_pct"] == "" and back[1]["success_turn_tap_pct"] == 60.0
    plot_curve(tmp_path / "curve.png", back)
    assert (tmp_path / "curve.png").stat().st_size > 1000


def test_steps_already_in_the_csv_are_not_evaluated_again(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _model_dir(run / "final", 700)
    out = tmp_path / "curve"
    write_curve(out / CURVE_CSV_NAME, [{"step": 700, "recognition_top1_pct": 10.0}])
    settings = EvaluationSettings(episodes=1, eval_seeds=(0,), rollouts=False)
    rows = learning_curve(run, settings, out)  # nothing left to run
    assert [r["step"] for r in rows] == [700.0]
    assert (out / "learning_curve.png").is_file()


def test_a_run_without_models_or_the_asked_steps_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    with pytest.raises(EvaluationError, match="no checkpoints"):
        learning_curve(tmp_path / "run", EvaluationSettings(), tmp_path / "out")
    _model_dir(tmp_path / "run" / "final", 700)
    with pytest.raises(EvaluationError, match=r"step\(s\) \[500\]"):
        learning_curve(tmp_path / "run", EvaluationSettings(), tmp_path / "out", steps=[500, 700])
