"""``mirror_study``: the mirror alignment against the no-mirror baseline, over several training seeds.

    mirror_study --config config/train_cpu_small.yaml --data data/train6 --out runs/study --seeds 0 1 2 \\
        --results docs/results

Both arms train with the same config, data, steps and seeds; they differ only in ``align_weight`` (the
config's for ``mirror``, 0 for ``baseline``; the study is about the loss, so nothing else changes).
``--policy-text own`` gives ARP a text tower of its own in both arms, so that nothing but the alignment loss
couples ViCLIP and ARP (the independent baseline); ``shared`` (the shipped model's recipe) lets ARP read
ViCLIP's text tower, which L_AU trains. Every row says which (column ``policy_text``). Each run
is then evaluated with one protocol: held-out recognition, Recall@1 through the heads as trained and through
probed heads (the baseline's never trained, so only the probe judges it), rollout success on the trained
instructions and, in the same scenes, the instruction-blind control. Writes into ``--results``:

* ``mirror_vs_baseline.csv``: one row per arm and training seed (columns :data:`RUN_COLUMNS` plus
  ``success_<task>``);
* ``mirror_vs_baseline_summary.csv``: per metric, each arm's mean and 95% interval across training seeds
  (t distribution) and the paired difference mirror - baseline over the seeds both arms finished;
* ``mirror_vs_baseline.png``: the summary as bars with those intervals.

Resumable as a whole: a run whose ``final/`` exists is not retrained (an unfinished one is resumed), an
evaluation whose ``results.json`` exists is not redone, and the CSVs are rebuilt from what is on disk.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import stats

from mirror_perception.errors import CheckpointError
from mirror_policy.evaluation.errors import EvaluationError
from mirror_policy.evaluation.reporting import RESULTS_NAME
from mirror_policy.evaluation.rollout import MAX_KEYFRAMES
from mirror_policy.evaluation.runner import EvaluationSettings, run_evaluation
from mirror_policy.joint_model import POLICY_TEXT
from mirror_policy.training.checkpointing import CHECKPOINTS_DIR, FINAL_DIR
from mirror_policy.training.config import TrainConfigError, load_train_config
from mirror_policy.training.train_joint import main as train_joint
from sim_bridge.errors import DatasetError, SimError

log = logging.getLogger("mirror_study")

ARMS = ("mirror", "baseline")
EVAL_DIR = "eval"
RUN_CSV_NAME = "mirror_vs_baseline.csv"
SUMMARY_CSV_NAME = "mirror_vs_baseline_summary.csv"
PLOT_NAME = "mirror_vs_baseline.png"
RUN_COLUMNS = (
    "arm", "train_seed", "policy_text", "recognition_top1", "recall_u2e_trained", "recall_e2u_trained",
    "recall_u2e_probe", "recall_e2u_probe", "success_mean", "success_blind_mean",
)  # fmt: skip
METRICS = RUN_COLUMNS[3:]
SUMMARY_COLUMNS = (
    "metric", "mirror_mean", "mirror_ci95_low", "mirror_ci95_high", "baseline_mean", "baseline_ci95_low",
    "baseline_ci95_high", "paired_seeds", "difference_mean", "difference_ci95_low", "difference_ci95_high",
)  # fmt: skip


def run_name(arm: str, seed: int) -> str:
    return f"{arm}_seed{seed}"


def train_arm(config: Path, data: Path, run_dir: Path, arm: str, seed: int, extra: Sequence[str]) -> None:
    """Train (or resume, or skip) one arm's run with ``train_joint``."""
    if (run_dir / FINAL_DIR).is_dir():
        log.info("%s: trained, skipped", run_dir)
        return
    argv = ["--config", str(config), "--data", str(data), "--seed", str(seed), *extra]
    if arm == "baseline":
        argv += ["--align-weight", "0"]
    if (run_dir / CHECKPOINTS_DIR).is_dir():
        log.info("%s: resuming", run_dir)
        argv += ["--resume", str(run_dir)]
    else:
        argv += ["--out", str(run_dir)]
    if train_joint(argv) != 0:
        raise EvaluationError(f"train_joint failed for {run_dir} (its log says why)")


def evaluate_arm(run_dir: Path, name: str, settings: EvaluationSettings) -> dict:
    """The run's evaluation (done now unless its results are already on disk)."""
    out = run_dir / EVAL_DIR
    path = out / RESULTS_NAME
    if path.is_file():
        log.info("%s: evaluated, skipped", run_dir)
    else:
        run_evaluation([run_dir], [name], settings, out)
    return json.loads(path.read_text())["models"][name]


def run_row(arm: str, seed: int, policy_text: str, model: dict) -> dict[str, float | str | int]:
    """One CSV row from a run's ``evaluate`` results (rates as fractions)."""
    pairing = model["alignment"]["pairing"]
    trained, probe = model["alignment"][pairing], model["alignment_probe"][pairing]
    row: dict[str, float | str | int] = {
        "arm": arm,
        "train_seed": seed,
        "policy_text": policy_text,
        "recognition_top1": model["recognition"]["overall"]["top1"],
        "recall_u2e_trained": trained["u_to_e"],
        "recall_e2u_trained": trained["e_to_u"],
        "recall_u2e_probe": probe["u_to_e"],
        "recall_e2u_probe": probe["e_to_u"],
        "success_mean": model["execution"]["overall"]["success_mean"],
        "success_blind_mean": model["execution_blind"]["overall"]["success_mean"],
    }
    for task, summary in sorted(model["execution"]["per_task"].items()):
        row[f"success_{task}"] = summary["success_mean"]
    return row


def interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% interval (t distribution) of ``values``; the interval is NaN for fewer than 2."""
    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean()) if array.size else float("nan")
    if array.size < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, array.size - 1) * array.std(ddof=1) / np.sqrt(array.size))
    return mean, mean - half, mean + half


def summary_rows(rows: Sequence[dict]) -> list[dict[str, float | str | int]]:
    """Per metric: each arm across its seeds, and mirror - baseline paired by training seed."""
    metrics = list(METRICS) + sorted({k for r in rows for k in r if k.startswith("success_")} - set(METRICS))
    by_arm = {arm: {int(r["train_seed"]): r for r in rows if r["arm"] == arm} for arm in ARMS}
    paired = sorted(set(by_arm["mirror"]) & set(by_arm["baseline"]))
    out = []
    for metric in metrics:
        row: dict[str, float | str | int] = {"metric": metric, "paired_seeds": len(paired)}
        for arm in ARMS:
            values = [float(r[metric]) for r in by_arm[arm].values() if r.get(metric) not in (None, "")]
            mean, low, high = interval(values)
            row.update({f"{arm}_mean": mean, f"{arm}_ci95_low": low, f"{arm}_ci95_high": high})
        differences = [
            float(by_arm["mirror"][s][metric]) - float(by_arm["baseline"][s][metric]) for s in paired
        ]
        mean, low, high = interval(differences)
        row.update(difference_mean=mean, difference_ci95_low=low, difference_ci95_high=high)
        out.append(row)
    return out


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="raise")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in row.items()})


def plot_summary(summary: Sequence[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [r["metric"] for r in summary]
    x = np.arange(len(metrics))
    fig, ax = plt.subplots(figsize=(max(7.0, 0.8 * len(metrics) + 2), 4.5))
    for i, arm in enumerate(ARMS):
        means = np.array([100 * float(r[f"{arm}_mean"]) for r in summary])
        low = np.array([100 * float(r[f"{arm}_ci95_low"]) for r in summary])
        high = np.array([100 * float(r[f"{arm}_ci95_high"]) for r in summary])
        errors = np.nan_to_num(np.vstack([means - low, high - means]))
        ax.bar(x + (i - 0.5) * 0.38, means, 0.38, yerr=errors, capsize=3, label=arm)
    ax.set_xticks(x)
    ax.set_xticklabels(metrics, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("% (mean, 95% interval across training seeds)")
    ax.set_ylim(0, 105)
    ax.set_title(f"Mirror vs baseline ({int(summary[0]['paired_seeds']) if summary else 0} paired seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, required=True, help="training config of both arms")
    parser.add_argument("--data", type=Path, required=True, help="dataset root (both arms, same split)")
    parser.add_argument("--out", type=Path, required=True, help="folder of the runs: <arm>_seed<s>/")
    parser.add_argument("--results", type=Path, default=Path("docs/results"), help="folder of the CSVs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--steps", type=int, help="training steps of every run (default: the config's)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="training config override for both arms (as train_joint --set); repeatable",
    )  # fmt: skip
    parser.add_argument("--max-steps", type=int, default=MAX_KEYFRAMES, help="keyframes per rollout")
    parser.add_argument(
        "--policy-text", choices=POLICY_TEXT, default="own",
        help="ARP's text tower in both arms: its own (default: only the loss couples the models) or ViCLIP's",
    )  # fmt: skip
    parser.add_argument("--episodes", type=int, default=25, help="rollouts per task and evaluation seed")
    parser.add_argument("--eval-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--probe-steps", type=int, default=1000, help="steps of each run's alignment probe")
    parser.add_argument("--processes", type=int, default=1, help="simulator processes for the rollouts")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds repeat")
    if args.probe_steps < 1:
        parser.error("--probe-steps must be >= 1: the baseline's alignment is only measured after probing")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    extra = [] if args.steps is None else ["--steps", str(args.steps)]
    args.overrides.append(f"policy_text={args.policy_text}")
    for override in args.overrides:
        extra += ["--set", override]
    if args.no_progress:
        extra.append("--no-progress")
    settings = EvaluationSettings(
        episodes=args.episodes, eval_seeds=tuple(args.eval_seeds), processes=args.processes,
        max_steps=args.max_steps, blind_control=True, probe_steps=args.probe_steps, probe_data=args.data,
        progress=not args.no_progress,
    )  # fmt: skip
    try:
        load_train_config(args.config, [*args.overrides, f"data.root={args.data}"])  # fails before any run
        settings.validate()
        rows = []
        for seed in args.seeds:
            for arm in args.arms:
                run_dir = args.out / run_name(arm, seed)
                train_arm(args.config, args.data, run_dir, arm, seed, extra)
                model = evaluate_arm(run_dir, run_name(arm, seed), settings)
                rows.append(run_row(arm, seed, args.policy_text, model))
                write_outputs(rows, args.results)
    except (TrainConfigError, DatasetError, SimError, EvaluationError, CheckpointError, ValueError) as err:
        log.error("%s", err)
        return 2
    return 0


def write_outputs(rows: Sequence[dict], results: Path) -> None:
    """The per-run CSV, the summary CSV and the plot, from every row so far."""
    tasks = sorted({k for r in rows for k in r if k.startswith("success_")} - set(METRICS))
    write_csv(results / RUN_CSV_NAME, [*RUN_COLUMNS, *tasks], rows)
    summary = summary_rows(rows)
    write_csv(results / SUMMARY_CSV_NAME, SUMMARY_COLUMNS, summary)
    plot_summary(summary, results / PLOT_NAME)
    log.info("wrote %s (%d runs)", results / RUN_CSV_NAME, len(rows))


if __name__ == "__main__":
    sys.exit(main())
