"""``export_checkpoint``: turn a finished ``train_joint`` run into a small, self-describing model directory.

The shipped checkpoints (checkpoints/) are made this way: the run's final model is re-saved (fp16 by default,
half the size; loading casts back to float32) with an ``extra.json`` recording where it came from, the exact
training config, the command that reproduces it and the run's last held-out metrics, so a reader of the
checkpoint never has to guess how it was trained. Beside it go the run's ``split.json`` (which episodes were
held out), ``training_curve.csv`` (every held-out evaluation the run logged) and ``train.log`` (timestamped:
how long the training took, resumptions included), so that every figure quoted about the model can be traced
to a file.

    export_checkpoint runs/mirror --out checkpoints/mirror_cpu_small \
        --command "train_joint --config config/train_cpu_small.yaml --data data/train_small --out runs/mirror"
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from mirror.evaluation.errors import CheckpointNotFoundError
from mirror.evaluation.model_source import resolve_checkpoint, run_directory
from mirror.model import MirrorModel
from mirror.training.run_directory import SPLIT_NAME, TRAIN_LOG_NAME
from mirror_common.cli import console_main
from mirror_common.errors import CheckpointError

log = logging.getLogger("export_checkpoint")

HELD_OUT_PREFIX = "held_out/"
TRAINING_CURVE_NAME = "training_curve.csv"


def held_out_records(run: Path) -> list[dict[str, Any]]:
    """Every logged record of held-out metrics in ``run/metrics.jsonl``, in order (empty when none)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by an interrupted write
        if isinstance(record, dict) and any(key.startswith(HELD_OUT_PREFIX) for key in record):
            records.append(record)
    return records


def last_held_out_metrics(run: Path) -> dict[str, Any]:
    """The last logged record of held-out metrics in ``run/metrics.jsonl`` (empty when there is none)."""
    records = held_out_records(run)
    return records[-1] if records else {}


def write_training_curve(records: list[dict[str, Any]], path: Path) -> None:
    """Held-out records as a CSV: ``step`` then each metric without its ``held_out/`` prefix."""
    names = sorted({k for r in records for k in r if k.startswith(HELD_OUT_PREFIX)})
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["step", *(n.removeprefix(HELD_OUT_PREFIX) for n in names)])
        for r in records:
            writer.writerow([r.get("step", ""), *(r.get(n, "") for n in names)])


def export_checkpoint(source: Path, out: Path, fp16: bool = True, command: str | None = None) -> Path:
    """Load ``source`` (a run directory's final or newest model, or a model directory; see
    :func:`resolve_checkpoint`) strictly and save it into ``out`` with its provenance; returns ``out``.

    Refuses to write into ``source`` itself (an export must never replace the model it reads)."""
    try:
        resolved = resolve_checkpoint(source)
    except CheckpointNotFoundError as exc:
        raise FileNotFoundError(
            f"{source} is not a model directory, a finished train_joint run or a run with checkpoints: {exc}"
        ) from exc
    model_dir = resolved.model_dir
    if out.resolve() == model_dir.resolve():
        raise ValueError(f"--out {out} is the source model directory; choose another directory")
    model = MirrorModel.from_pretrained(model_dir)
    stored = MirrorModel.read_extra(model_dir) or {}
    run = run_directory(model_dir)
    extra: dict[str, Any] = {
        "source": str(model_dir),
        "step": stored.get("step"),
        "train_config": stored.get("train_config"),
        "train_command": command,
        "held_out_metrics": last_held_out_metrics(run) if run is not None else {},
        "dtype": "float16" if fp16 else "float32",
    }
    model.save_pretrained(out, extra=extra, fp16=fp16)
    if run is not None:
        for name in (SPLIT_NAME, TRAIN_LOG_NAME):
            if (run / name).is_file():
                shutil.copyfile(run / name, out / name)
        records = held_out_records(run)
        if records:
            write_training_curve(records, out / TRAINING_CURVE_NAME)
    return out


@console_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="export_checkpoint", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="train_joint run directory (its final/) or model directory")
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument("--fp32", action="store_true", help="keep float32 weights (default: float16)")
    parser.add_argument("--command", default=None, help="the train_joint command line, recorded verbatim")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        out = export_checkpoint(args.source, args.out, fp16=not args.fp32, command=args.command)
    except (FileNotFoundError, ValueError, CheckpointError) as exc:
        parser.exit(2, f"export_checkpoint: error: {exc}\n")
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    log.info("wrote %s (%.1f MB)", out, size / 1e6)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
