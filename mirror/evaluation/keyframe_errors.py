"""``keyframe_errors``: how far each predicted keyframe lands from the demonstration's, per task and step.

For every held-out demonstration the policy acts from the observations it acts from in the demo (frame 0,
then each keyframe but the last, as in the alignment pairs) under the episode's instruction, and its action is
compared with the demo's next keyframe: the position error (cm), the rotation error (degrees, the angle
between the two orientations) and whether the gripper command matches. Rollout success says whether an episode
works; these figures say which part of the action misses and by how much, without the simulator
(``keyframe_noise`` gives the tolerance each task needs).

Whether the policy listens: at each step it also acts under the trained instruction of another variation of
the same task (the first in the vocabulary), and ``instruction_shift_cm`` is how far that moves the predicted
position. Where the variations put the target elsewhere (another button, the other tap) a policy that reads
its instruction moves by about that distance; one that ignores it does not move at all (empty for a task with
one trained variation). The instruction-blind control of ``evaluate`` says whether success depends on the
instruction; this says where in the action the instruction is lost.

Which object: the first keyframe (step 0) is where the policy picks what to act on (which button, tap or
piece of meat); later keyframes start beside it. ``first_keyframe_beyond_5cm_pct`` is the share of episodes
whose first keyframe lands more than 5 cm off, i.e. on another object where the scene has several.

Which stage picks it: ARP finds a keyframe's position in two stages, a coarse one over the whole workspace and
a fine one in a cube zoomed in around the coarse point (trained within ``stage2_center_noise`` of the target,
so it refines around that point rather than moving to another object). ``coarse_cm`` is how far the coarse
point lands from the demo's keyframe; ``first_keyframe_coarse_beyond_5cm_pct`` beside
``first_keyframe_beyond_5cm_pct`` says whether a wrong object was the coarse stage's choice.

``--approach`` also acts at step 0 from frames part of the way to the first keyframe (``approach_errors``):
whether the policy finds the object or follows the arm's heading.

    keyframe_errors --checkpoints runs/mirror checkpoints/mirror_cpu_small --names new shipped --out DIR
    keyframe_errors --from-errors DIR/keyframe_errors.csv --out DIR    # re-summarise rows, no model

writes ``DIR/keyframe_errors.csv`` (one row per model, episode and step),
``DIR/keyframe_errors_summary.csv`` (per model and task, and over all tasks) and
``DIR/keyframe_errors_steps.csv`` (per model, task and step: which keyframe of a task misses); with
``--approach`` also ``DIR/approach.csv`` and ``DIR/approach_summary.csv``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mirror.agent import MirrorAgent
from mirror.evaluation.approach_errors import (
    APPROACH_NAME,
    APPROACH_SUMMARY_COLUMNS,
    APPROACH_SUMMARY_NAME,
    ApproachError,
    approach_errors,
    summarise_approach,
)
from mirror.evaluation.episode_data import demo_keyframes, load_observations, policy_frames
from mirror.evaluation.held_out import SPLIT_PARTS, HeldOutEpisode, held_out_from_dataset, held_out_from_split
from mirror.evaluation.model_source import resolve_checkpoint
from mirror.evaluation.reporting import write_csv
from mirror_common.cli import EXIT_USAGE, console_main
from mirror_common.outputs import prepare_output_directory
from mirror_policy.arp.action_tokens import quaternion_angle_deg
from sim_bridge.actions import MAX_KEYFRAMES

log = logging.getLogger("keyframe_errors")

ERRORS_NAME = "keyframe_errors.csv"
SUMMARY_NAME = "keyframe_errors_summary.csv"
STEPS_NAME = "keyframe_errors_steps.csv"
ALL_TASKS = "all"
SUMMARY_COLUMNS = (
    "task", "keyframes", "position_mean_cm", "position_median_cm", "position_within_1cm_pct",
    "position_within_2cm_pct", "position_beyond_5cm_pct", "first_keyframe_beyond_5cm_pct",
    "rotation_median_deg", "rotation_beyond_10deg_pct", "gripper_accuracy_pct", "instruction_shift_median_cm",
    "instruction_shift_beyond_5cm_pct", "coarse_median_cm", "first_keyframe_coarse_beyond_5cm_pct",
)  # fmt: skip


STEP_COLUMNS = (
    "task", "step", "keyframes", "position_median_cm", "position_beyond_5cm_pct", "coarse_median_cm",
    "coarse_beyond_5cm_pct", "rotation_median_deg",
)  # fmt: skip


@dataclass(frozen=True)
class KeyframeError:
    """One predicted keyframe against the demonstration's."""

    task: str
    episode: int
    step: int
    position_cm: float
    rotation_deg: float
    gripper_match: bool
    instruction_shift_cm: float = math.nan  # see the module docstring
    coarse_cm: float = math.nan  # the coarse stage's point from the demo's keyframe (NaN: not recorded)


def other_variation_instruction(task: str, instruction: str, vocabulary: Sequence[str]) -> str | None:
    """The first trained instruction of ``task`` that names another variation than ``instruction`` does."""
    from sim_bridge.tasks import make_task  # the task registry needs PyBullet; the rest of this module not

    spec = make_task(task)
    own = {v for v in range(spec.variation_count()) if instruction in spec.descriptions(v)}
    for candidate in vocabulary:
        variations = {v for v in range(spec.variation_count()) if candidate in spec.descriptions(v)}
        if variations and not variations & own:
            return candidate
    return None


def keyframe_errors(
    agent: MirrorAgent, episodes: Sequence[HeldOutEpisode], progress: bool = True
) -> list[KeyframeError]:
    """The errors of every step the policy acts at in ``episodes`` (see the module docstring)."""
    cameras = list(agent.model.arp.config.cameras)
    vocabulary = list(agent.config.instructions)
    errors: list[KeyframeError] = []
    for episode in tqdm(episodes, desc="keyframes", unit="ep", disable=not progress):
        other = other_variation_instruction(episode.task, episode.instruction, vocabulary)
        low_dim, keyframes = demo_keyframes(episode)
        frames = policy_frames(keyframes)
        observations = load_observations(episode, [frame for frame, _ in frames], cameras)
        targets = [low_dim[frame] for frame in keyframes]
        for observation, (_, step), target in zip(observations, frames, targets):
            action, _, coarse = agent.predict(observation, episode.instruction, min(step, MAX_KEYFRAMES - 1))
            shift = math.nan
            if other is not None:
                swapped, _ = agent.act(observation, other, min(step, MAX_KEYFRAMES - 1))
                shift = 100.0 * float(np.linalg.norm(swapped.position - action.position))
            pose = np.asarray(target.gripper_pose, dtype=np.float64)
            rotation = quaternion_angle_deg(
                torch.as_tensor(action.quaternion, dtype=torch.float64), torch.as_tensor(pose[3:7])
            )
            errors.append(
                KeyframeError(
                    task=episode.task,
                    episode=episode.episode,
                    step=step,
                    position_cm=100.0 * float(np.linalg.norm(action.position - pose[:3])),
                    rotation_deg=float(rotation),
                    gripper_match=action.gripper_open == (float(target.gripper_open) > 0.5),
                    instruction_shift_cm=shift,
                    coarse_cm=100.0 * float(np.linalg.norm(coarse - pose[:3])),
                )
            )
    return errors


def share(values: Sequence[float], test: Callable[[float], bool]) -> float:
    """Percentage of ``values`` that pass ``test``."""
    return 100.0 * sum(1 for v in values if test(v)) / len(values)


def summarise(errors: Sequence[KeyframeError]) -> list[dict[str, float | int | str]]:
    """Per task, then over all tasks: count, position mean / median and the shares within 1 cm, within 2 cm
    and beyond 5 cm, the share of first keyframes (step 0) beyond 5 cm, rotation median and the share beyond
    10 degrees, gripper accuracy (percentages), the median instruction shift and the share of steps it
    exceeds 5 cm (NaN where no step had another variation's instruction), and the coarse point's median
    error and share of first keyframes beyond 5 cm (NaN for rows read from a CSV without them)."""
    groups: dict[str, list[KeyframeError]] = {}
    for error in errors:
        groups.setdefault(error.task, []).append(error)
    rows = []
    for task, group in [*sorted(groups.items()), (ALL_TASKS, list(errors))]:
        if not group:
            continue
        position = [e.position_cm for e in group]
        rotation = [e.rotation_deg for e in group]
        shifts = [e.instruction_shift_cm for e in group if math.isfinite(e.instruction_shift_cm)]
        first = [e.position_cm for e in group if e.step == 0]
        coarse = [e.coarse_cm for e in group if math.isfinite(e.coarse_cm)]
        first_coarse = [e.coarse_cm for e in group if e.step == 0 and math.isfinite(e.coarse_cm)]

        values = (
            task,
            len(group),
            statistics.fmean(position),
            statistics.median(position),
            share(position, lambda v: v < 1.0),
            share(position, lambda v: v < 2.0),
            share(position, lambda v: v > 5.0),
            share(first, lambda v: v > 5.0) if first else math.nan,
            statistics.median(rotation),
            share(rotation, lambda v: v > 10.0),
            100.0 * sum(e.gripper_match for e in group) / len(group),
            statistics.median(shifts) if shifts else math.nan,
            share(shifts, lambda v: v > 5.0) if shifts else math.nan,
            statistics.median(coarse) if coarse else math.nan,
            share(first_coarse, lambda v: v > 5.0) if first_coarse else math.nan,
        )
        rows.append(dict(zip(SUMMARY_COLUMNS, values)))
    return rows


def summarise_steps(errors: Sequence[KeyframeError]) -> list[dict[str, float | int | str]]:
    """Per task and step (sorted): count, position median and share beyond 5 cm, the coarse point's median
    and share beyond 5 cm (NaN where not recorded), and rotation median."""
    groups: dict[tuple[str, int], list[KeyframeError]] = {}
    for error in errors:
        groups.setdefault((error.task, error.step), []).append(error)
    rows = []
    for (task, step), group in sorted(groups.items()):
        position = [e.position_cm for e in group]
        coarse = [e.coarse_cm for e in group if math.isfinite(e.coarse_cm)]
        values = (
            task,
            step,
            len(group),
            statistics.median(position),
            share(position, lambda v: v > 5.0),
            statistics.median(coarse) if coarse else math.nan,
            share(coarse, lambda v: v > 5.0) if coarse else math.nan,
            statistics.median(e.rotation_deg for e in group),
        )
        rows.append(dict(zip(STEP_COLUMNS, values)))
    return rows


def _format(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if math.isfinite(value) else ""
    return str(value)


def _write_per_model(
    paths: tuple[Path, Path],
    record_type: type,
    results: dict[str, list[Any]],
    summarise_rows: Callable[[list[Any]], list[dict[str, float | int | str]]],
    summary_columns: tuple[str, ...],
) -> None:
    """``paths``: one row per model and ``record_type`` record, and one per model and summary row."""
    rows_path, summary_path = paths
    fields = tuple(record_type.__dataclass_fields__)
    rows = [{"model": name, **{k: _format(v) for k, v in asdict(e).items()}}
            for name, errors in results.items() for e in errors]  # fmt: skip
    write_csv(rows_path, ("model", *fields), rows)
    _write_summary(summary_path, results, summarise_rows, summary_columns)


def _write_summary(
    path: Path,
    results: dict[str, list[Any]],
    summarise_rows: Callable[[list[Any]], list[dict[str, float | int | str]]],
    columns: tuple[str, ...],
) -> None:
    """One row per model and row of ``summarise_rows`` of its records."""
    summary = [{"model": name, **{k: _format(v) for k, v in row.items()}}
               for name, errors in results.items() for row in summarise_rows(errors)]  # fmt: skip
    write_csv(path, ("model", *columns), summary)


def write_errors(out: Path, results: dict[str, list[KeyframeError]]) -> None:
    """The three CSVs of the module docstring for ``{model name: errors}``."""
    paths = (out / ERRORS_NAME, out / SUMMARY_NAME)
    _write_per_model(paths, KeyframeError, results, summarise, SUMMARY_COLUMNS)
    _write_summary(out / STEPS_NAME, results, summarise_steps, STEP_COLUMNS)


def write_approach(out: Path, results: dict[str, list[ApproachError]]) -> None:
    """``approach.csv`` and its summary (see ``approach_errors``) for ``{model name: errors}``."""
    paths = (out / APPROACH_NAME, out / APPROACH_SUMMARY_NAME)
    _write_per_model(paths, ApproachError, results, summarise_approach, APPROACH_SUMMARY_COLUMNS)


def read_errors(path: Path) -> dict[str, list[KeyframeError]]:
    """``{model name: errors}`` from a ``keyframe_errors.csv`` that :func:`write_errors` wrote."""
    results: dict[str, list[KeyframeError]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            shift, coarse = row["instruction_shift_cm"], row.get("coarse_cm", "")
            results.setdefault(row["model"], []).append(
                KeyframeError(
                    task=row["task"],
                    episode=int(row["episode"]),
                    step=int(row["step"]),
                    position_cm=float(row["position_cm"]),
                    rotation_deg=float(row["rotation_deg"]),
                    gripper_match=row["gripper_match"] == "True",
                    instruction_shift_cm=float(shift) if shift else math.nan,
                    coarse_cm=float(coarse) if coarse else math.nan,
                )
            )
    return results


def held_out_episodes(
    checkpoint: Path,
    data: Path | None,
    tasks: Sequence[str],
    part: str = "held_out",
    split: Path | None = None,
) -> list[HeldOutEpisode]:
    """``--data``'s episodes when given, else the ``part`` rows of ``split`` (default: the checkpoint's
    ``split.json``)."""
    if data is not None:
        return held_out_from_dataset(data, tasks)
    if split is None:
        resolved = resolve_checkpoint(checkpoint)
        split = resolved.split_file or resolved.model_dir / "split.json"
    return held_out_from_split(split, tasks, part)


@console_main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="keyframe_errors", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoints", type=Path, nargs="+", help="run or model directories")
    source.add_argument(
        "--from-errors", type=Path, help="a keyframe_errors.csv to summarise again (no model is run)"
    )
    parser.add_argument("--names", nargs="+", help="one name per checkpoint (default: the directory names)")
    parser.add_argument(
        "--data", type=Path, help="episodes to measure on (default: each run's held-out split)"
    )
    parser.add_argument(
        "--split",
        type=Path,
        help="measure every model on this split.json's episodes (default: each run's own), e.g. to compare "
        "two models on the newer one's held-out demos",
    )
    parser.add_argument(
        "--split-part",
        choices=SPLIT_PARTS,
        default="held_out",
        help="which episodes of the run's split.json to measure on: train beside held_out shows memorisation",
    )
    parser.add_argument("--tasks", nargs="*", default=[], help="only these tasks")
    parser.add_argument("--out", type=Path, required=True, help="folder for the two CSVs")
    parser.add_argument(
        "--approach",
        action="store_true",
        help="also act from frames on the way to the first keyframe (approach.csv; see approach_errors)",
    )
    parser.add_argument(
        "--coarse-prior", type=float, default=0.0,
        help="the weight of ARP's coarse stage in placing each keyframe (MirrorAgent; 0, as trained)",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.data is not None and args.split is not None:
        parser.error("--data and --split both name the episodes to measure on; give one")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.from_errors is not None:
        results = read_errors(args.from_errors)
        write_errors(prepare_output_directory(args.out, "--out directory"), results)
        log.info("summarised %d models' rows of %s into %s", len(results), args.from_errors, args.out)
        return 0
    names = args.names or [path.name for path in args.checkpoints]
    if len(names) != len(args.checkpoints):
        log.error("--names needs one name per checkpoint (%d for %d)", len(names), len(args.checkpoints))
        return EXIT_USAGE
    out = prepare_output_directory(args.out, "--out directory")
    results = {}
    approach = {}
    for name, checkpoint in zip(names, args.checkpoints):
        agent = MirrorAgent.from_pretrained(
            resolve_checkpoint(checkpoint).model_dir, coarse_prior=args.coarse_prior
        )
        episodes = held_out_episodes(checkpoint, args.data, args.tasks, args.split_part, args.split)
        results[name] = keyframe_errors(agent, episodes, progress=not args.no_progress)
        if args.approach:
            approach[name] = approach_errors(agent, episodes, progress=not args.no_progress)
        overall = summarise(results[name])[-1]
        log.info(
            "%s: %d keyframes, position median %.2f cm, rotation median %.1f deg, instruction shift median "
            "%.2f cm",
            *(name, overall["keyframes"], overall["position_median_cm"], overall["rotation_median_deg"]),
            overall["instruction_shift_median_cm"],
        )
    write_errors(out, results)
    log.info("wrote %s, %s and %s", out / ERRORS_NAME, out / SUMMARY_NAME, out / STEPS_NAME)
    if approach:
        write_approach(out, approach)
        log.info("wrote %s and %s", out / APPROACH_NAME, out / APPROACH_SUMMARY_NAME)
    return 0
