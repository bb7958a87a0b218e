"""Evaluation outputs: ``results.json`` (everything), ``eval_results.csv`` (one row per model and task, like
ARP's file of the same name, plus an ``average`` row), ``summary.csv`` (one row per model),
``variation_results.csv`` (success per task variation, beside the instruction-blind control when it ran)
and, per model with recognition, ``confusion_<model>.csv`` (rows = true instruction, columns = recognised
instruction, counts of held-out videos). Rates in the JSON are fractions in [0, 1]; the CSV columns ending
in ``_pct`` are percentages."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mirror.evaluation.recognition import ConfusionMatrix
from mirror_common.serialization import atomic_write

RESULTS_NAME = "results.json"
TASK_CSV_NAME = "eval_results.csv"
SUMMARY_CSV_NAME = "summary.csv"
VARIATION_CSV_NAME = "variation_results.csv"
AVERAGE_ROW = "average"
CONFUSION_CORNER = "true \\ predicted"  # the confusion CSV's top-left cell

TASK_COLUMNS = (
    "model", "task", "success_mean_pct", "success_std_pct", "blind_success_mean_pct", "blind_success_std_pct",
    "rollout_episodes", "eval_seeds", "mean_steps", "failures_planning", "failures_invalid_action",
    "failures_max_steps", "recognition_top1_pct", "recognition_topk_pct", "recognition_chance_pct",
    "held_out_episodes", "inference_s_per_episode", "planning_s_per_episode", "execution_s_per_episode",
    "total_s_per_episode",
)  # fmt: skip
SUMMARY_COLUMNS = (
    "model", "checkpoint", "success_mean_pct", "success_std_pct", "blind_success_mean_pct",
    "blind_success_std_pct", "recognition_top1_pct",
    "recognition_topk_pct", "recognition_chance_pct", "recall_at_1_u_to_e_pct", "recall_at_1_e_to_u_pct",
    "recall_at_1_mean_pct", "recall_at_1_chance_pct", "recall_at_1_u_to_e_probe_pct",
    "recall_at_1_e_to_u_probe_pct", "probe_steps", "rollout_recall_at_1_succeeded_pct",
    "rollout_recall_at_1_failed_pct", "rollout_recall_at_1_succeeded_probe_pct",
    "rollout_recall_at_1_failed_probe_pct", "alignment_pairing", "alignment_pairs",
    "total_s_per_episode",
)  # fmt: skip
VARIATION_COLUMNS = (
    "model", "task", "variation", "instruction", "trained_instruction", "rollout_episodes", "success_pct",
    "blind_success_pct",
)  # fmt: skip


def file_stem(name: str) -> str:
    """A model name made safe for a file name (per-model outputs: confusion_<stem>.csv, ...)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "model"


def confusion_file(model: str, suffix: str) -> str:
    """``confusion_<model>.<suffix>``: the CSV here, the heatmap in :mod:`~mirror.evaluation.plots`."""
    return f"confusion_{file_stem(model)}.{suffix}"


def confusion_rows(confusion: ConfusionMatrix) -> list[list[str]]:
    """The confusion CSV: a header of predicted instructions, then one row of counts per true instruction."""
    header = [CONFUSION_CORNER, *confusion.labels]
    return [header] + [
        [label, *(str(int(c)) for c in row)] for label, row in zip(confusion.labels, confusion.counts)
    ]


def _pct(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{100.0 * value:.2f}"


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _task_row(
    model: str, task: str, execution: Mapping | None, recognition: Mapping | None, blind: Mapping | None
) -> dict[str, str]:
    row = dict.fromkeys(TASK_COLUMNS, "")
    row["model"], row["task"] = model, task
    if blind is not None:
        row["blind_success_mean_pct"] = _pct(blind["success_mean"])
        row["blind_success_std_pct"] = _pct(blind["success_std"])
    if execution is not None:
        timing = execution["timing_mean_seconds"]
        row.update(
            success_mean_pct=_pct(execution["success_mean"]),
            success_std_pct=_pct(execution["success_std"]),
            rollout_episodes=str(execution["episodes"]),
            eval_seeds=str(len(execution["success_per_seed"])),
            mean_steps=f"{execution['mean_steps']:.2f}",
            failures_planning=str(execution["failures"]["planning_error"]),
            failures_invalid_action=str(execution["failures"]["invalid_action"]),
            failures_max_steps=str(execution["failures"]["max_steps"]),
            inference_s_per_episode=_seconds(timing["inference_seconds"]),
            planning_s_per_episode=_seconds(timing["planning_seconds"]),
            execution_s_per_episode=_seconds(timing["execution_seconds"]),
            total_s_per_episode=_seconds(timing["total_seconds"]),
        )
    if recognition is not None:
        k = recognition["top_k"]
        scores = recognition["scores"]
        row.update(
            recognition_top1_pct=_pct(scores["top1"]),
            recognition_topk_pct=_pct(scores[f"top{k}"]),
            recognition_chance_pct=_pct(recognition["chance_top1"]),
            held_out_episodes=str(scores["episodes"]),
        )
    return row


def task_rows(results: Mapping[str, Any]) -> list[dict[str, str]]:
    """Rows of ``eval_results.csv``: every task of every model, then each model's ``average`` row."""
    rows = []
    for name, model in results["models"].items():
        execution = model.get("execution")
        blind = model.get("execution_blind")
        recognition = model.get("recognition")
        tasks = sorted(
            set(execution["per_task"] if execution else [])
            | set(recognition["per_task"] if recognition else [])
        )
        for task in [*tasks, AVERAGE_ROW]:
            task_exec = _task_execution(execution, task)
            task_rec = None
            if recognition and (task == AVERAGE_ROW or task in recognition["per_task"]):
                scores = recognition["overall"] if task == AVERAGE_ROW else recognition["per_task"][task]
                task_rec = {**recognition, "scores": scores}
            rows.append(_task_row(name, task, task_exec, task_rec, _task_execution(blind, task)))
    return rows


def _task_execution(execution: Mapping | None, task: str) -> Mapping | None:
    """One task's (or, for the average row, the overall) execution summary."""
    if not execution:
        return None
    return execution["overall"] if task == AVERAGE_ROW else execution["per_task"].get(task)


def _trained(model: Mapping[str, Any], instruction: str | None) -> str:
    """``yes``/``no``: was the model trained on this instruction (empty where results predate the record)."""
    vocabulary = model.get("vocabulary")
    if vocabulary is None or instruction is None:
        return ""
    return "yes" if instruction in vocabulary else "no"


def variation_rows(results: Mapping[str, Any]) -> list[dict[str, str]]:
    """Rows of ``variation_results.csv``: success of every rolled-out task variation, pooled over seeds."""
    rows = []
    for name, model in results["models"].items():
        execution, blind = model.get("execution"), model.get("execution_blind")
        if not execution:
            continue
        instructions = {(e["task"], e["variation"]): e["instruction"] for e in execution.get("episodes", [])}
        for task, summary in execution["per_task"].items():
            blind_rates = blind["per_task"][task]["success_per_variation"] if blind else {}
            for variation, rate in summary["success_per_variation"].items():
                instruction = instructions.get((task, int(variation)))
                rows.append(
                    {
                        "model": name,
                        "task": task,
                        "variation": variation,
                        "instruction": instruction or "",
                        "trained_instruction": _trained(model, instruction),
                        "rollout_episodes": str(summary["episodes_per_variation"][variation]),
                        "success_pct": _pct(rate),
                        "blind_success_pct": _pct(blind_rates.get(variation)),
                    }
                )
    return rows


def summary_rows(results: Mapping[str, Any]) -> list[dict[str, str]]:
    rows = []
    for name, model in results["models"].items():
        row = dict.fromkeys(SUMMARY_COLUMNS, "")
        row["model"], row["checkpoint"] = name, model["checkpoint"]
        if execution := model.get("execution"):
            overall = execution["overall"]
            row["success_mean_pct"] = _pct(overall["success_mean"])
            row["success_std_pct"] = _pct(overall["success_std"])
            row["total_s_per_episode"] = _seconds(overall["timing_mean_seconds"]["total_seconds"])
        if blind := model.get("execution_blind"):
            row["blind_success_mean_pct"] = _pct(blind["overall"]["success_mean"])
            row["blind_success_std_pct"] = _pct(blind["overall"]["success_std"])
        if recognition := model.get("recognition"):
            k = recognition["top_k"]
            row["recognition_top1_pct"] = _pct(recognition["overall"]["top1"])
            row["recognition_topk_pct"] = _pct(recognition["overall"][f"top{k}"])
            row["recognition_chance_pct"] = _pct(recognition["chance_top1"])
        if alignment := model.get("alignment"):
            pairing = alignment["pairing"]
            row.update(
                recall_at_1_u_to_e_pct=_pct(alignment[pairing]["u_to_e"]),
                recall_at_1_e_to_u_pct=_pct(alignment[pairing]["e_to_u"]),
                recall_at_1_mean_pct=_pct(alignment[pairing]["mean"]),
                recall_at_1_chance_pct=_pct(alignment[pairing]["chance"]),
                alignment_pairing=pairing,
                alignment_pairs=str(alignment["pairs"]),
            )
        pairing = (model.get("alignment") or {}).get("pairing", "instruction")
        for key, suffix in (("rollout_alignment", ""), ("rollout_alignment_probe", "_probe")):
            for label, subset in model.get(key, {}).items():  # mean of both directions
                if pairing in subset:
                    row[f"rollout_recall_at_1_{label}{suffix}_pct"] = _pct(subset[pairing]["mean"])
        if probe := model.get("alignment_probe"):
            pairing = probe["pairing"]
            row.update(
                recall_at_1_u_to_e_probe_pct=_pct(probe[pairing]["u_to_e"]),
                recall_at_1_e_to_u_probe_pct=_pct(probe[pairing]["e_to_u"]),
                probe_steps=str(probe["probe_steps"]),
            )
        rows.append(row)
    return rows


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    """``rows`` under the header ``columns``, written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda tmp: Path(tmp).write_text(buffer.getvalue(), encoding="utf-8"))


def _write_rows(path: Path, rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    atomic_write(path, lambda tmp: Path(tmp).write_text(buffer.getvalue(), encoding="utf-8"))


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_results(out_dir: Path, results: Mapping[str, Any]) -> dict[str, Path]:
    """Write results.json, the CSVs and each model's confusion CSV (each atomically); returns their paths
    (keys ``results``, ``per_task_csv``, ``summary_csv``, ``variation_csv``, ``confusion_csv_<model>``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "results": out_dir / RESULTS_NAME,
        "per_task_csv": out_dir / TASK_CSV_NAME,
        "summary_csv": out_dir / SUMMARY_CSV_NAME,
        "variation_csv": out_dir / VARIATION_CSV_NAME,
    }
    text = json.dumps(_json_safe(results), indent=2, sort_keys=False) + "\n"
    atomic_write(paths["results"], lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    write_csv(paths["per_task_csv"], TASK_COLUMNS, task_rows(results))
    write_csv(paths["summary_csv"], SUMMARY_COLUMNS, summary_rows(results))
    write_csv(paths["variation_csv"], VARIATION_COLUMNS, variation_rows(results))
    for name, model in results["models"].items():
        if "confusion" in model.get("recognition", {}):
            path = out_dir / confusion_file(name, "csv")
            _write_rows(path, confusion_rows(ConfusionMatrix.from_dict(model["recognition"]["confusion"])))
            paths[f"confusion_csv_{name}"] = path
    return paths
