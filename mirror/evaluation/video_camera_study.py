"""``video_camera_study``: which camera should the video model watch? AU-only training, one run per camera.

    video_camera_study --data data/train6 --out docs/results/video_camera --steps 1500

For every camera a fresh ViCLIP (the training config's ``viclip`` section) learns action recognition alone
(``L_AU`` over the whole instruction vocabulary, the trainer's clip sampling, optimizer and schedule for
``--steps`` steps at the config's batch size and precision) on the training split of ``--data``, and every
``--eval-every`` steps its recognition top-1 is measured on the held-out episodes (the config's split, clips
picked as ``evaluate`` and the perception node pick them). Writes ``video_camera_study.csv`` (one row per
camera and evaluation) and ``video_camera_study.png``. A camera whose last evaluation is in the CSV is
skipped, so an interrupted study resumes where it stopped. Without ARP a step takes a fraction of a joint
step: the study is a quick way to choose ``data.video_camera`` before a long ``train_joint`` run.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mirror.evaluation.errors import EvaluationError
from mirror.precision import precision_autocast
from mirror.training.config import TrainConfig, TrainConfigError, load_train_config
from mirror.training.data import (
    STREAM_DATA,
    STREAM_VIDEO,
    EpisodeEntry,
    EpisodeStore,
    draw_au_clips,
    scan_episodes,
    split_episodes,
    step_rng,
    step_seed,
)
from mirror.training.optim import MirrorOptimizers, build_viclip_optimizer
from mirror_common.cli import console_main
from mirror_perception.demonstration import demonstration_clip_indices
from mirror_perception.modeling_viclip import ViCLIP
from mirror_perception.recognition import InstructionRecognizer
from mirror_perception.tokenizer import ClipTokenizer
from sim_bridge.cameras import CAMERA_NAMES
from sim_bridge.errors import DatasetError

log = logging.getLogger("video_camera_study")

STUDY_CSV_NAME = "video_camera_study.csv"
STUDY_PNG_NAME = "video_camera_study.png"
COLUMNS = ("camera", "step", "train_loss_au", "held_out_top1_pct", "held_out_episodes", "seed")


class CameraRun:
    """One camera's AU-only training: model, optimizer, data and the held-out clips."""

    def __init__(
        self, config: TrainConfig, camera: str, train: list[EpisodeEntry], held_out: list[EpisodeEntry]
    ) -> None:
        self.config = config
        model_config = config.model_config(sorted({e.instruction for e in train + held_out}))
        torch.manual_seed(config.seed)
        self.model = ViCLIP(model_config.viclip)
        self.vocabulary = list(model_config.instructions)
        tokenizer = ClipTokenizer(context_length=model_config.viclip.context_length)
        self.vocabulary_ids = tokenizer(self.vocabulary)
        self.recognizer = InstructionRecognizer(self.model, tokenizer, self.vocabulary)
        self.optimizers = MirrorOptimizers(build_viclip_optimizer(self.model, config.optim), None, None)
        self.store = EpisodeStore(model_config.arp, camera, cache=True)
        self.train_by_task: dict[str, list[EpisodeEntry]] = {}
        for entry in train:
            self.train_by_task.setdefault(entry.task, []).append(entry)
        self.clip_frames = model_config.clip_frames
        self.held_out_clips = np.stack(
            [self.store.clip(e, demonstration_clip_indices(e.length, self.clip_frames)) for e in held_out]
        )
        self.held_out_targets = torch.tensor([self.vocabulary.index(e.instruction) for e in held_out])

    def train_step(self, step: int) -> float:
        c = self.config
        self.optimizers.set_step(step, c)
        rng = step_rng(c.seed, STREAM_DATA, step)
        entries, clips = draw_au_clips(self.train_by_task, self.store, c.batch_size, self.clip_frames, rng)
        targets = torch.tensor([self.vocabulary.index(e.instruction) for e in entries])
        generator = torch.Generator().manual_seed(step_seed(c.seed, STREAM_VIDEO, step))
        self.model.train()
        with precision_autocast(c.precision, torch.device("cpu")):
            out = self.model(
                torch.from_numpy(np.stack(clips)),
                self.vocabulary_ids,
                text_targets=targets,
                generator=generator,
            )
        optimizer = self.optimizers.viclip
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        return float(out.loss.detach())

    def held_out_top1(self, batch: int = 32) -> float:
        """Recognition top-1 over the vocabulary on the held-out episodes, in percent."""
        self.recognizer.refresh()  # the text tower trained since the last call
        clips = self.held_out_clips
        predicted = torch.cat(
            [
                self.recognizer.similarities(clips[i : i + batch]).argmax(dim=1)
                for i in range(0, len(clips), batch)
            ]
        )
        return 100.0 * float((predicted == self.held_out_targets).float().mean())


def run_camera(
    config: TrainConfig,
    camera: str,
    train: list[EpisodeEntry],
    held_out: list[EpisodeEntry],
    eval_every: int,
    progress: bool = True,
) -> list[dict]:
    """Train one camera's model for ``config.steps`` steps; one row per held-out evaluation."""
    run = CameraRun(config, camera, train, held_out)
    rows, losses = [], []
    for step in tqdm(range(config.steps), desc=f"AU on {camera}", disable=not progress, dynamic_ncols=True):
        losses.append(run.train_step(step))
        if (step + 1) % eval_every == 0 or step + 1 == config.steps:
            rows.append(
                {
                    "camera": camera,
                    "step": step + 1,
                    "train_loss_au": round(float(np.mean(losses[-eval_every:])), 4),
                    "held_out_top1_pct": round(run.held_out_top1(), 2),
                    "held_out_episodes": len(held_out),
                    "seed": config.seed,
                }
            )
            log.info("%s step %d: held-out top-1 %.1f%%", camera, step + 1, rows[-1]["held_out_top1_pct"])
    return rows


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: Path, rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def plot_study(rows: Sequence[dict], path: Path, chance_pct: float) -> Path:
    from mirror.evaluation.plots import plt, save_figure

    fig, ax = plt.subplots(figsize=(7.5, 4))
    for camera in dict.fromkeys(r["camera"] for r in rows):
        own = [r for r in rows if r["camera"] == camera]
        ax.plot(
            [int(r["step"]) for r in own], [float(r["held_out_top1_pct"]) for r in own], "o-", label=camera
        )
    ax.axhline(chance_pct, color="grey", linestyle=":", label="chance")
    ax.set_xlabel("AU-only training step")
    ax.set_ylabel("held-out recognition top-1 (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Which camera the video model watches")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    return save_figure(fig, path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="RLBench-layout dataset root (as for train_joint)")
    parser.add_argument("--out", required=True, help="folder for the CSV and the plot")
    parser.add_argument("--config", default="config/train_cpu_small.yaml", help="training config to follow")
    parser.add_argument("--cameras", nargs="+", default=list(CAMERA_NAMES), choices=CAMERA_NAMES)
    parser.add_argument("--steps", type=int, default=1500, help="AU steps per camera")
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.eval_every < 1:
        parser.error("--steps and --eval-every must be >= 1")
    return args


@console_main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        overrides = [f"data.root={args.data}", f"steps={args.steps}", f"seed={args.seed}", "device=cpu"]
        config = load_train_config(args.config, overrides)
        torch.set_num_threads(max(1, config.threads))
        entries = scan_episodes(config.data.root, config.data.tasks, config.data.instruction_index)
        train, held_out = split_episodes(entries, config.data.holdout_fraction)
        if not held_out:
            raise EvaluationError("the split holds out no episode: set data.holdout_fraction > 0")
        out = Path(args.out)
        csv_path = out / STUDY_CSV_NAME
        rows = read_rows(csv_path)
        for camera in args.cameras:
            done = {int(r["step"]) for r in rows if r["camera"] == camera and int(r["seed"]) == args.seed}
            if args.steps in done:
                log.info("%s: already in %s, skipped", camera, csv_path)
                continue
            rows = [r for r in rows if not (r["camera"] == camera and int(r["seed"]) == args.seed)]
            rows += run_camera(config, camera, train, held_out, args.eval_every, not args.no_progress)
            write_rows(csv_path, rows)
        vocabulary = {e.instruction for e in entries}
        plot_study(
            [r for r in rows if int(r["seed"]) == args.seed], out / STUDY_PNG_NAME, 100 / len(vocabulary)
        )
    except (TrainConfigError, DatasetError, EvaluationError, OSError) as err:
        log.error("video_camera_study: %s", err)
        return 2
    log.info("wrote %s and %s", csv_path, out / STUDY_PNG_NAME)
    return 0


if __name__ == "__main__":
    sys.exit(main())
