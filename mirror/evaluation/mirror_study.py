"""``mirror_study``: the mirror alignment against the no-mirror baseline, over several training seeds.

    mirror_study --config config/train_cpu_small.yaml --data data/train6 --out runs/study --seeds 0 1 2 \\
        --results docs/results
    mirror_study ... --name ablation --reference instruction --arm episode:alignment.pairing=episode \\
        --arm instruction: --arm class:alignment.pairing=class --arm lambda0.25:align_weight=0.25

Each arm is a name and training overrides (``--arm NAME:KEY=VALUE,KEY=VALUE``); the default arms are
``mirror`` (the config as it is) and ``baseline`` (``align_weight=0``), and any other grid (the paper's
Table 3 ablations: pairing by episode / instruction / class, lambda_align) is a list of arms.

All arms train with the same config, data, steps and seeds and differ only in their overrides (mirror and
baseline only in ``align_weight``: the study is about the loss, so nothing else changes).
``--policy-text own`` gives ARP a text tower of its own in every arm, so that nothing but the alignment loss
couples ViCLIP and ARP (the independent baseline); ``shared`` (the shipped model's recipe) lets ARP read
ViCLIP's text tower, which L_AU trains. Every row says which (column ``policy_text``). Each run
is then evaluated with one protocol: held-out recognition, Recall@1 through the heads as trained and through
probed heads (the baseline's never trained, so only the probe judges it), rollout success on the trained
instructions and, in the same scenes, the instruction-blind control. Recall@1 counts a hit by one pairing for
every arm (``--pairing``, default instruction: any clip of the same instruction), and the probes train with
it: an arm trained on episode pairs would otherwise be scored against another chance level (one episode's
clips, not one instruction's). Writes into ``--results`` (``NAME`` =
``--name``, default ``mirror_vs_baseline``):

* ``NAME.csv``: one row per arm and training seed (columns :data:`RUN_COLUMNS` plus ``success_<task>`` and,
  with ``--rollout-alignment``, ``rollout_recall_{succeeded,failed}_probe``: paper Fig. 3);
* ``NAME_summary.csv``: per metric and arm, the mean and 95% interval across training seeds (t distribution)
  and the paired difference arm - ``--reference`` over the seeds both finished;
* ``NAME.png``: the arms' means with those intervals.

Resumable as a whole, also across machines and sessions whose run folders are gone: ``NAME_protocol.json``
beside the CSV records what every row was made under (each arm's resolved training config, the steps, the
evaluation settings and the dataset's fingerprint, :func:`dataset_fingerprint`), and a run whose row is
already in ``NAME.csv`` under the same protocol is neither trained nor evaluated again; a different protocol
(another evaluation, other data, an arm of the same name trained differently) is refused (use another
``--name`` or ``--results``) rather than mixed in, while new arms and seeds may be added. A run another study
in ``--results`` already made (same evaluation, data, resolved training config and seed: the ablation's
reference arm is the main study's mirror arm) is taken from that study's CSV instead of being made again.
Otherwise a run whose ``final/`` exists is not retrained (an unfinished one is resumed) and an evaluation
whose ``results.json`` exists is not redone. The summary is always computed from ``NAME.csv`` as written,
so it can be traced to that file.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import multiprocessing as mp
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from mirror.alignment import PAIRINGS
from mirror.evaluation.errors import EvaluationError
from mirror.evaluation.reporting import RESULTS_NAME
from mirror.evaluation.runner import EvaluationSettings, run_evaluation
from mirror.model import POLICY_TEXT, MirrorModel
from mirror.training.config import (
    TrainConfig,
    TrainConfigError,
    deep_merge,
    load_train_config,
    parse_override,
)
from mirror.training.run_directory import FINAL_DIR, latest_checkpoint
from mirror.training.train_joint import main as train_joint
from mirror_common.cli import console_main
from mirror_common.errors import CheckpointError
from sim_bridge.actions import MAX_KEYFRAMES
from sim_bridge.dataset.fingerprint import dataset_fingerprint
from sim_bridge.errors import DatasetError, SimError

log = logging.getLogger("mirror_study")

DEFAULT_ARMS = ("mirror:", "baseline:align_weight=0")
DEFAULT_NAME = "mirror_vs_baseline"
EVAL_DIR = "eval"
RUN_COLUMNS = (
    "arm", "train_seed", "policy_text", "recognition_top1", "recall_u2e_trained", "recall_e2u_trained",
    "recall_u2e_probe", "recall_e2u_probe", "success_mean", "success_blind_mean",
)  # fmt: skip
METRICS = RUN_COLUMNS[3:]
SHARED_PROTOCOL = ("evaluation", "data_fingerprint")  # what every arm of a study shares
EXTRA_PREFIXES = ("success_", "rollout_recall_")  # per-task success, Fig. 3 alignment when measured
DETAIL = re.compile(r"_v\d+$|^success_blind_")  # per variation, blind per task: in the CSVs, not the plot
SUMMARY_COLUMNS = (
    "metric", "arm", "seeds", "mean", "ci95_low", "ci95_high", "reference", "paired_seeds", "difference_mean",
    "difference_ci95_low", "difference_ci95_high",
)  # fmt: skip


@dataclass(frozen=True)
class Arm:
    """One arm of a study: a name and the training overrides that make it (``--set`` syntax)."""

    name: str
    overrides: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Arm:
        """``NAME:KEY=VALUE,KEY=VALUE`` (nothing after the colon: the config as it is)."""
        name, _, settings = text.partition(":")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"arm {text!r}: the name must be letters, digits, '_', '.' or '-'")
        overrides = tuple(item.strip() for item in settings.split(",") if item.strip())
        for item in overrides:
            parse_override(item)  # a malformed override fails now
        return cls(name, overrides)


class ProtocolMismatchError(EvaluationError):
    """The results folder holds rows made under another protocol than this invocation's."""


def run_name(arm: str, seed: int) -> str:
    return f"{arm}_seed{seed}"


def train_arm(config: Path, data: Path, run_dir: Path, arm: Arm, seed: int, extra: Sequence[str]) -> None:
    """Train (or resume, or skip) one arm's run with ``train_joint``."""
    if (run_dir / FINAL_DIR).is_dir():
        log.info("%s: trained, skipped", run_dir)
        return
    argv = ["--config", str(config), "--data", str(data), "--seed", str(seed), *extra]
    for override in arm.overrides:
        argv += ["--set", override]
    if resumable_checkpoint(run_dir) is not None:
        log.info("%s: resuming", run_dir)
        argv += ["--resume", str(run_dir)]
    else:
        if run_dir.exists():  # stopped before its first checkpoint: nothing to resume, and it is seeded
            log.warning("%s: stopped before its first checkpoint; training it again from step 0", run_dir)
            shutil.rmtree(run_dir)
        argv += ["--out", str(run_dir)]
    if train_joint(argv) != 0:
        raise EvaluationError(f"train_joint failed for {run_dir} (its log says why)")


def resumable_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint ``train_joint --resume`` would take up (``latest_checkpoint``), None without one."""
    try:
        return latest_checkpoint(run_dir)
    except CheckpointError:
        return None


def _log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def trained_runs(
    jobs: Sequence[tuple], parallel: int, train: Callable[..., None] = train_arm
) -> Iterator[tuple]:
    """Train every job (:func:`train_arm`'s arguments) and yield each as its training ends, for the caller to
    evaluate before it asks for the next. ``parallel`` > 1 runs that many jobs at once in worker processes
    (each run uses the config's ``threads``; the config's 1 leaves the other core idle), the caller's
    evaluation counting as one of them: a training holds its decoded dataset (~8 GB for data/train6), so
    ``parallel`` bounds the memory as well as the cores."""
    if parallel == 1:
        for job in jobs:
            train(*job)
            yield job
        return
    waiting, running, finished = list(jobs), {}, []
    pool = ProcessPoolExecutor(
        parallel, mp_context=mp.get_context("spawn"), initializer=_log_to_stderr, max_tasks_per_child=1
    )  # a fresh process per run: an idle worker would keep the last run's memory

    def start(up_to: int) -> None:
        while waiting and len(running) < up_to:
            job = waiting.pop(0)
            running[pool.submit(train, *job)] = job

    try:
        while waiting or running or finished:
            if finished:
                start(parallel - 1)  # the caller's evaluation takes the last slot
                yield finished.pop(0)
                continue
            start(parallel)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()  # a failed training raises here
                finished.append(running.pop(future))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_state(run_dir: Path) -> str:
    """Where a run without a row stands, from its folder (``--status``)."""
    if (run_dir / EVAL_DIR / RESULTS_NAME).is_file():
        return "evaluated (its row is written on the next run of the study)"
    if (run_dir / FINAL_DIR).is_dir():
        return "trained, not evaluated"
    if (checkpoint := resumable_checkpoint(run_dir)) is not None:
        return f"training, checkpoint {checkpoint.name}"
    return (
        "no checkpoint yet (unless training now, it trains again from step 0)"
        if run_dir.is_dir()
        else "to do"
    )


def evaluate_arm(run_dir: Path, name: str, settings: EvaluationSettings) -> dict:
    """The run's evaluation (done now unless its results, scored with ``settings.pairing``, are on disk)."""
    out = run_dir / EVAL_DIR
    path = out / RESULTS_NAME
    if path.is_file():
        model = json.loads(path.read_text())["models"].get(name, {})
        scored = (model.get("alignment") or {}).get("pairing")
        if scored == settings.pairing:
            log.info("%s: evaluated, skipped", run_dir)
            return model
        log.info("%s: evaluated with pairing %s, not %s: evaluating again", run_dir, scored, settings.pairing)
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
    for label in ("succeeded", "failed"):  # paper Fig. 3 (--rollout-alignment), through the probed heads
        subset = model.get("rollout_alignment_probe", {}).get(label, {})
        if pairing in subset:
            row[f"rollout_recall_{label}_probe"] = subset[pairing]["mean"]
    for kind, prefix in (("execution", "success"), ("execution_blind", "success_blind")):
        for task, summary in sorted(model[kind]["per_task"].items()):
            row[f"{prefix}_{task}"] = summary["success_mean"]
            per_variation = summary["success_per_variation"]
            for variation in sorted(per_variation, key=int):  # a control: does success follow the instruction
                row[f"{prefix}_{task}_v{variation}"] = per_variation[variation]
    return row


def study_protocol(args: argparse.Namespace, settings: EvaluationSettings) -> dict:
    """What a row of this study depends on besides its arm and seed (see the module docstring)."""
    arms = {}
    for arm in args.arms:
        overrides = [*args.overrides, *arm.overrides, f"data.root={args.data}"]
        if args.steps is not None:
            overrides.append(f"steps={args.steps}")
        config = comparable_config(load_train_config(args.config, overrides).to_dict())
        arms[arm.name] = {"overrides": list(arm.overrides), "train_config": config}
    evaluation = {
        "episodes": settings.episodes, "eval_seeds": list(settings.eval_seeds),
        "max_steps": settings.max_steps, "probe_steps": settings.probe_steps,
        "blind_control": settings.blind_control,
        "rollout_alignment": settings.rollout_alignment, "pairing": settings.pairing,
    }  # fmt: skip
    return {"arms": arms, "evaluation": evaluation, "data_fingerprint": dataset_fingerprint(args.data)}


def comparable_config(config: dict) -> dict:
    """A resolved training config as a protocol records it: without where the data lies (the fingerprint says
    what it is), the row's own seed and how the run was split into invocations."""
    config = {**config, "data": {k: v for k, v in config["data"].items() if k != "root"}}
    return {k: v for k, v in config.items() if k not in ("seed", "stop_after")}


def with_defaults(config: dict | None) -> dict | None:
    """A recorded training config with the settings added to :class:`TrainConfig` since it was written, at
    their defaults: a new setting's default keeps the old behaviour, so rows made before it existed still
    match today's resolved config (and a non-default value still does not)."""
    return None if config is None else deep_merge(comparable_config(TrainConfig().to_dict()), config)


def evaluation_with_defaults(protocol: dict) -> dict:
    """A protocol whose evaluation predates its ``pairing``: each arm was then scored and probed with its own
    training pairing, which is one common pairing when all its arms trained with the same one (else None,
    which matches no study's pairing)."""
    evaluation = protocol.get("evaluation") or {}
    if "pairing" in evaluation:
        return protocol
    configs = [with_defaults(arm.get("train_config")) for arm in protocol.get("arms", {}).values()]
    own = {config["alignment"]["pairing"] for config in configs if config is not None}
    return {**protocol, "evaluation": {**evaluation, "pairing": own.pop() if len(own) == 1 else None}}


def protocol_differences(recorded: dict, current: dict, where: str = "") -> list[str]:
    """Dotted keys whose values differ between two protocols."""
    out = []
    for key in sorted(set(recorded) | set(current)):
        old, new = recorded.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            out += protocol_differences(old, new, f"{where}{key}.")
        elif old != new:
            out.append(f"{where}{key}: {old!r} -> {new!r}")
    return out


def shared_differences(recorded: dict, current: dict) -> list[str]:
    """Differences in what every arm of a study shares (:data:`SHARED_PROTOCOL`)."""
    recorded, current = evaluation_with_defaults(recorded), evaluation_with_defaults(current)
    return protocol_differences(*({k: p.get(k) for k in SHARED_PROTOCOL} for p in (recorded, current)))


def incompatibilities(recorded: dict, current: dict) -> list[str]:
    """Why rows made under ``recorded`` may not sit beside rows made under ``current``: another evaluation,
    other data, or an arm of the same name trained differently (arms may be added; overrides spelled
    differently but resolving to the same config are the same arm)."""
    out = shared_differences(recorded, current)
    for arm in sorted(set(recorded.get("arms", {})) & set(current["arms"])):
        old, new = (with_defaults(p["arms"][arm].get("train_config")) for p in (recorded, current))
        out += protocol_differences({"train_config": old}, {"train_config": new}, f"arms.{arm}.")
    return out


def read_protocol(path: Path, table: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ProtocolMismatchError(
            f"{table} has rows but {path.name} is missing or unreadable ({err}), so what they were made "
            "under is unknown; move them away or choose another --name"
        ) from err


def read_rows(table: Path) -> dict[tuple[str, int], dict]:
    with table.open(newline="") as handle:
        return {(row["arm"], int(row["train_seed"])): row for row in csv.DictReader(handle)}


def finished_rows(
    results: Path, name: str, protocol: dict, record_protocol: bool = True
) -> dict[tuple[str, int], dict]:
    """The rows already in ``NAME.csv``, by (arm, seed), after checking they may sit beside this protocol's
    (:func:`incompatibilities`); records the protocol, with any arms it adds, unless told not to."""
    table, record = results / f"{name}.csv", results / f"{name}_protocol.json"
    rows: dict[tuple[str, int], dict] = {}
    if table.is_file():
        recorded = read_protocol(record, table)
        changed = incompatibilities(recorded, protocol)
        if changed:
            raise ProtocolMismatchError(
                f"the rows in {table} were made under another protocol ({'; '.join(changed[:5])}"
                f"{'; ...' if len(changed) > 5 else ''}); choose another --name or --results to start a new "
                "study"
            )
        protocol = {**protocol, "arms": {**recorded["arms"], **protocol["arms"]}}
        rows = read_rows(table)
    if record_protocol:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(protocol, indent=2, sort_keys=True) + "\n")
    return rows


def row_from_other_study(results: Path, name: str, protocol: dict, arm: str, seed: int) -> dict | None:
    """The same run made by another study in ``results``: same evaluation, data and resolved training config
    (e.g. the ablation's reference arm is the main study's mirror arm), renamed to ``arm``; else None."""
    mine = with_defaults(protocol["arms"][arm]["train_config"])
    for record in sorted(results.glob("*_protocol.json")):
        other = record.name.removesuffix("_protocol.json")
        table = results / f"{other}.csv"
        if other == name or not table.is_file():
            continue
        recorded = read_protocol(record, table)
        if shared_differences(recorded, protocol):
            continue
        rows = read_rows(table)
        for other_arm, entry in recorded.get("arms", {}).items():
            row = rows.get((other_arm, seed))
            if with_defaults(entry.get("train_config")) == mine and row is not None:
                log.info("%s: the same run is %s's %s, taken from %s", run_name(arm, seed), other, other_arm,
                         table.name)  # fmt: skip
                return {**row, "arm": arm}
    return None


def interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% interval (t distribution) of ``values``; the interval is NaN for fewer than 2."""
    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean()) if array.size else float("nan")
    if array.size < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, array.size - 1) * array.std(ddof=1) / np.sqrt(array.size))
    return mean, mean - half, mean + half


def measured(row: dict, metric: str) -> bool:
    """Whether a run has the metric (e.g. not Fig. 3's alignment when no rollout failed)."""
    return row.get(metric) not in (None, "")


def summary_rows(rows: Sequence[dict], reference: str) -> list[dict[str, float | str | int]]:
    """Per metric and arm: the arm across its seeds, and arm - ``reference`` paired by training seed."""
    metrics = list(METRICS) + sorted(
        {k for r in rows for k in r if k.startswith(EXTRA_PREFIXES)} - set(METRICS)
    )
    arms = list(dict.fromkeys(str(r["arm"]) for r in rows))
    by_arm = {arm: {int(r["train_seed"]): r for r in rows if r["arm"] == arm} for arm in arms}
    base = by_arm.get(reference, {})
    out = []
    for metric in metrics:
        for arm in arms:
            mine = by_arm[arm]
            mean, low, high = interval([float(r[metric]) for r in mine.values() if measured(r, metric)])
            row: dict[str, float | str | int] = {
                "metric": metric, "arm": arm, "seeds": len(mine), "mean": mean, "ci95_low": low,
                "ci95_high": high, "reference": reference,
            }  # fmt: skip
            if arm != reference:
                both = set(mine) & set(base)
                paired = sorted(s for s in both if measured(mine[s], metric) and measured(base[s], metric))
                differences = [float(mine[s][metric]) - float(base[s][metric]) for s in paired]
                difference, low, high = interval(differences)
                row.update(
                    paired_seeds=len(paired), difference_mean=difference, difference_ci95_low=low,
                    difference_ci95_high=high,
                )  # fmt: skip
            out.append(row)
    return out


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="raise", restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in row.items()})


def plot_summary(summary: Sequence[dict], path: Path, title: str) -> Path:
    from mirror.evaluation.plots import plt, save_figure

    metrics = [m for m in dict.fromkeys(r["metric"] for r in summary) if m in METRICS or not DETAIL.search(m)]
    arms = list(dict.fromkeys(r["arm"] for r in summary))
    width = 0.8 / max(len(arms), 1)
    x = np.arange(len(metrics))
    fig, ax = plt.subplots(figsize=(max(7.0, 0.3 * len(metrics) * len(arms) + 2), 4.5))
    for i, arm in enumerate(arms):
        mine = {r["metric"]: r for r in summary if r["arm"] == arm}
        means = np.array([100 * float(mine[m]["mean"]) for m in metrics])
        low = np.array([100 * float(mine[m]["ci95_low"]) for m in metrics])
        high = np.array([100 * float(mine[m]["ci95_high"]) for m in metrics])
        errors = np.vstack([means - low, high - means])  # NaN with one seed: no bar rather than a zero one
        seeds = max(int(r["seeds"]) for r in mine.values())
        offset = (i - (len(arms) - 1) / 2) * width
        label = f"{arm} ({seeds} seed{'' if seeds == 1 else 's'})"
        ax.bar(x + offset, means, width, yerr=errors, capsize=2, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(metrics, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("% (mean, 95% interval across training seeds)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, required=True, help="training config of both arms")
    parser.add_argument("--data", type=Path, required=True, help="dataset root (both arms, same split)")
    parser.add_argument("--out", type=Path, required=True, help="folder of the runs: <arm>_seed<s>/")
    parser.add_argument("--results", type=Path, default=Path("docs/results"), help="folder of the CSVs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument(
        "--arm", dest="arms", action="append", metavar="NAME:KEY=VALUE,...",
        help="an arm and its training overrides; repeatable (default: mirror: and baseline:align_weight=0)",
    )  # fmt: skip
    parser.add_argument("--reference", default="baseline", help="the arm every other is compared with")
    parser.add_argument("--name", default=DEFAULT_NAME, help="file stem of the CSVs and the plot")
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
    parser.add_argument(
        "--pairing", choices=PAIRINGS, default="instruction",
        help="what counts as a hit in every arm's Recall@1, and what its probe trains on",
    )  # fmt: skip
    parser.add_argument("--processes", type=int, default=1, help="simulator processes for the rollouts")
    parser.add_argument(
        "--rollout-alignment", action="store_true",
        help="also Recall@1 on succeeded vs failed rollouts (paper Fig. 3; rollouts render every tick)",
    )  # fmt: skip
    parser.add_argument(
        "--train-jobs", type=int, default=1,
        help="runs trained at once (worker processes); evaluation overlaps the next training",
    )  # fmt: skip
    parser.add_argument(
        "--status", action="store_true",
        help="say where each run stands (row written, evaluated, training at step N, to do) and exit",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.train_jobs < 1:
        parser.error("--train-jobs must be >= 1")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds repeat")
    if args.probe_steps < 1:
        parser.error("--probe-steps must be >= 1: the baseline's alignment is only measured after probing")
    try:
        args.arms = [Arm.parse(text) for text in (args.arms or DEFAULT_ARMS)]
    except (ValueError, TrainConfigError) as err:
        parser.error(str(err))
    names = [a.name for a in args.arms]
    if len(set(names)) != len(names):
        parser.error(f"arm names repeat: {names}")
    if args.reference not in names:
        parser.error(f"--reference {args.reference!r} is not one of the arms {names}")
    return args


@console_main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _log_to_stderr()
    extra = [] if args.steps is None else ["--steps", str(args.steps)]
    args.overrides.append(f"policy_text={args.policy_text}")
    for override in args.overrides:
        extra += ["--set", override]
    if args.no_progress:
        extra.append("--no-progress")
    settings = EvaluationSettings(
        episodes=args.episodes, eval_seeds=tuple(args.eval_seeds), processes=args.processes,
        max_steps=args.max_steps, blind_control=True, rollout_alignment=args.rollout_alignment,
        probe_steps=args.probe_steps, probe_data=args.data, pairing=args.pairing,
        progress=not args.no_progress,
    )  # fmt: skip
    try:
        settings.validate()
        protocol = study_protocol(args, settings)  # a bad config or override fails before any run
        finished = finished_rows(args.results, args.name, protocol, record_protocol=not args.status)
        planned = {(arm.name, seed) for seed in args.seeds for arm in args.arms}
        rows = [row for key, row in finished.items() if key not in planned]  # earlier seeds, kept
        order = [arm.name for arm in args.arms]
        todo: list[tuple] = []
        for seed in args.seeds:
            for arm in args.arms:
                if (arm.name, seed) in finished:
                    log.info("%s: in %s.csv, skipped", run_name(arm.name, seed), args.name)
                    rows.append(finished[(arm.name, seed)])
                    continue
                if row := row_from_other_study(args.results, args.name, protocol, arm.name, seed):
                    rows.append(row)
                    continue
                run_dir = args.out / run_name(arm.name, seed)
                if args.status:
                    log.info("%s: %s", run_name(arm.name, seed), run_state(run_dir))
                todo.append((args.config, args.data, run_dir, arm, seed, extra))
        if args.status:
            done = len(planned) - len(todo)
            log.info("%d of %d runs have their row in %s.csv", done, len(planned), args.name)
            return 0
        for _, _, run_dir, arm, seed, _ in trained_runs(todo, args.train_jobs):
            model = evaluate_arm(run_dir, run_name(arm.name, seed), settings)
            policy_text = MirrorModel.read_config(run_dir / FINAL_DIR)[0].policy_text  # an arm may set it
            rows.append(run_row(arm.name, seed, policy_text, model))
            write_outputs(rows, args.results, args.name, args.reference, order)
        write_outputs(rows, args.results, args.name, args.reference, order)
    except (TrainConfigError, DatasetError, SimError, EvaluationError, CheckpointError, ValueError) as err:
        log.error("%s", err)
        return 2
    return 0


def write_outputs(rows: list[dict], results: Path, name: str, reference: str, arms: Sequence[str]) -> None:
    """``NAME.csv``, ``NAME_summary.csv`` and ``NAME.png`` from every row so far (sorted by training seed,
    then in the order of ``arms``)."""
    rows.sort(key=lambda r: (int(r["train_seed"]), arms.index(r["arm"]) if r["arm"] in arms else len(arms)))
    extra = sorted({k for r in rows for k in r if k.startswith(EXTRA_PREFIXES)} - set(METRICS))
    table = results / f"{name}.csv"
    write_csv(table, [*RUN_COLUMNS, *extra], rows)
    with table.open(newline="") as handle:  # the summary of the table as written, rounding included
        summary = summary_rows(list(csv.DictReader(handle)), reference)
    write_csv(results / f"{name}_summary.csv", SUMMARY_COLUMNS, summary)
    plot_summary(summary, results / f"{name}.png", f"{name} (paired against {reference})")
    log.info("wrote %s (%d runs)", results / f"{name}.csv", len(rows))


if __name__ == "__main__":
    sys.exit(main())
