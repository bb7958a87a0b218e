"""``learning_curve``: evaluate a training run's checkpoints, to tell whether more steps would help.

    learning_curve runs/mirror --episodes 5 --eval-seeds 0 --out docs/results/learning_curve

Each ``checkpoints/step_*`` model of the run (and ``final/``) gets the ``evaluate`` protocol: recognition
top-1 over the vocabulary on the held-out episodes, alignment Recall@1 both ways, and rollout success per
task. The held-out position error and recognition that ``train_joint`` logged at the same step (from
``metrics.jsonl``) go beside them. Writes ``learning_curve.csv`` (one row per step) and ``learning_curve.png``
into ``--out``, with each checkpoint's full ``evaluate`` output under ``--out/steps/``. Re-running skips the
steps already in the CSV (a step evaluated with ``--skip-rollouts`` is redone when rollouts are asked for), so
it can follow a run that is still training (its checkpoints are kept only as long as ``keep_checkpoints``
says).
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mirror.evaluation.errors import EvaluationError
from mirror.evaluation.runner import EvaluationSettings, run_evaluation
from mirror.model import MirrorModel
from mirror.training.export import HELD_OUT_PREFIX, held_out_records
from mirror.training.run_directory import CHECKPOINTS_DIR, FINAL_DIR
from mirror_common.cli import console_main
from mirror_common.errors import CheckpointError
from sim_bridge.errors import DatasetError, SimError

log = logging.getLogger("learning_curve")

CURVE_CSV_NAME = "learning_curve.csv"
CURVE_PNG_NAME = "learning_curve.png"
# Columns from train_joint's own held-out evaluation, logged in metrics.jsonl.
LOGGED = {
    "position_error_cm": ("position_error_m", 100.0),
    "logged_recognition_top1_pct": ("recognition_top1", 100.0),
}


def run_checkpoints(run: Path) -> list[tuple[int, Path]]:
    """(step, model directory) of every complete checkpoint and the final model, by step."""
    found: dict[int, Path] = {}
    candidates = sorted((run / CHECKPOINTS_DIR).glob("step_*")) + [run / FINAL_DIR]
    for directory in candidates:
        try:
            extra = MirrorModel.read_extra(directory)
        except (CheckpointError, OSError):
            continue  # not a model directory (a partial write, or no final/ yet)
        if extra is not None and isinstance(extra.get("step"), int):
            found.setdefault(extra["step"], directory)
    return sorted(found.items())


def _logged_at(records: list[dict[str, Any]], step: int) -> dict[str, float]:
    """The held-out metrics train_joint logged last at or before ``step`` (its evaluation of that model)."""
    before = [r for r in records if isinstance(r.get("step"), int) and r["step"] < step]
    if not before:
        return {}
    record = before[-1]
    out = {}
    for column, (name, scale) in LOGGED.items():
        value = record.get(HELD_OUT_PREFIX + name)
        if isinstance(value, int | float):
            out[column] = round(scale * float(value), 3)
    return out


def curve_row(step: int, model: dict[str, Any], logged: dict[str, float]) -> dict[str, Any]:
    """One CSV row from one model's ``evaluate`` results."""
    row: dict[str, Any] = {"step": step}
    if recognition := model.get("recognition"):
        row["recognition_top1_pct"] = round(100 * recognition["overall"]["top1"], 2)
    if alignment := model.get("alignment"):
        pairing = alignment[alignment["pairing"]]
        row["recall_u2e_pct"] = round(100 * pairing["u_to_e"], 2)
        row["recall_e2u_pct"] = round(100 * pairing["e_to_u"], 2)
    if execution := model.get("execution"):
        row["success_mean_pct"] = round(100 * execution["overall"]["success_mean"], 2)
        for task, result in sorted(execution["per_task"].items()):
            row[f"success_{task}_pct"] = round(100 * result["success_mean"], 2)
    row.update(logged)
    return row


def read_curve(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return [{k: float(v) if v else "" for k, v in r.items()} for r in csv.DictReader(f)]


def write_curve(path: Path, rows: list[dict[str, Any]]) -> None:
    rows = sorted(rows, key=lambda r: float(r["step"]))
    columns = ["step"] + sorted({k for r in rows for k in r} - {"step"})
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "step": int(float(r["step"]))})


def plot_curve(path: Path, rows: list[dict[str, Any]]) -> None:
    """Percent metrics against step on the left axis, position error in cm on the right."""
    from mirror.evaluation.plots import plt, save_figure

    rows = sorted(rows, key=lambda r: float(r["step"]))
    steps = [float(r["step"]) for r in rows]
    fig, left = plt.subplots(figsize=(7, 4))
    for column in ("recognition_top1_pct", "recall_u2e_pct", "recall_e2u_pct", "success_mean_pct"):
        points = [(s, r[column]) for s, r in zip(steps, rows) if r.get(column, "") != ""]
        if points:
            left.plot(*zip(*points), marker="o", label=column.removesuffix("_pct").replace("_", " "))
    left.set_xlabel("training step")
    left.set_ylabel("%")
    left.set_ylim(0, 100)
    right = left.twinx()
    points = [
        (s, r["position_error_cm"]) for s, r in zip(steps, rows) if r.get("position_error_cm", "") != ""
    ]
    if points:
        right.plot(*zip(*points), color="black", linestyle="--", marker="x", label="held-out position error")
        right.set_ylabel("position error (cm)")
        right.set_ylim(bottom=0)
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    labels = left.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
    left.legend(handles, labels, fontsize=8, loc="upper left")
    save_figure(fig, path)


def learning_curve(
    run: Path, settings: EvaluationSettings, out: Path, steps: Sequence[int] = ()
) -> list[dict[str, Any]]:
    """Evaluate the checkpoints of ``run`` (only ``steps`` when given) not yet in ``out``'s CSV; returns all
    rows."""
    checkpoints = run_checkpoints(run)
    if not checkpoints:
        raise EvaluationError(f"{run} has no checkpoints/step_* or final/ model to evaluate")
    if steps:
        missing = sorted(set(steps) - {step for step, _ in checkpoints})
        if missing:
            raise EvaluationError(f"{run} holds no checkpoint of step(s) {missing}")
        checkpoints = [(step, d) for step, d in checkpoints if step in set(steps)]
    csv_path = out / CURVE_CSV_NAME
    rows = read_curve(csv_path)
    # A step is done when its row holds what this evaluation measures (rollouts added later redo it).
    done = {
        int(float(r["step"])) for r in rows if not settings.rollouts or r.get("success_mean_pct", "") != ""
    }
    records = held_out_records(run)
    for step, directory in checkpoints:
        if step in done:
            continue
        log.info("evaluating step %d (%s)", step, directory)
        name = f"step_{step}"
        results = run_evaluation([directory], [name], settings, out / "steps" / name)
        rows = [r for r in rows if int(float(r["step"])) != step]
        rows.append(curve_row(step, results["models"][name], _logged_at(records, step)))
        write_curve(csv_path, rows)
    plot_curve(out / CURVE_PNG_NAME, rows)
    return rows


@console_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="learning_curve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="a train_joint run directory")
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for the CSV, plot and each step's files"
    )
    parser.add_argument("--tasks", nargs="+", default=[], help="restrict the rollouts to these tasks")
    parser.add_argument("--episodes", type=int, default=5, help="rollouts per task and seed (default 5)")
    parser.add_argument("--eval-seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", nargs="+", type=int, default=[], help="only these steps (default: all)")
    parser.add_argument("--skip-rollouts", action="store_true")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level), format="%(levelname)s %(name)s: %(message)s")
    if not args.run.is_dir():
        parser.error(f"{args.run} is not a run directory")
    settings = EvaluationSettings(
        tasks=tuple(args.tasks),
        episodes=args.episodes,
        eval_seeds=tuple(args.eval_seeds),
        rollouts=not args.skip_rollouts,
        progress=False,
    )
    try:
        settings.validate()
    except ValueError as err:
        parser.error(str(err))
    try:
        rows = learning_curve(args.run, settings, args.out, args.steps)
    except (EvaluationError, CheckpointError, DatasetError, SimError) as err:
        log.error("%s", err)
        return 2
    log.info("wrote %s (%d steps)", args.out / CURVE_CSV_NAME, len(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
