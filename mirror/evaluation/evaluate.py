"""Evaluate Mirror checkpoints with the paper's protocol.

    evaluate --checkpoints runs/mirror --out eval/mirror
    evaluate --checkpoints runs/mirror runs/baseline --names mirror baseline --out eval/compare
    evaluate --checkpoints runs/mirror/final --data data/test --tasks push_buttons --episodes 5 --eval-seeds 0

Measures, per checkpoint (a train_joint run directory or a saved model directory):
  * action understanding: top-1 / top-k instruction recognition among ALL instructions of the model's
    vocabulary, one uniform 8-frame clip of the model's video camera per held-out episode, per task and
    overall, vs chance;
  * alignment: bidirectional Recall@1 between T_u u (clip) and T_e e (policy at the demo's keyframe
    observations) on held-out pairs, for episode / instruction / class positives;
  * embodied execution: per task, --episodes rollouts in unseen scenes per evaluation seed in the embedded
    simulator (at most --max-steps keyframes; planner or invalid-action failure = failure), mean +- std over
    --eval-seeds, with failure reasons and a time breakdown per episode.
Held-out episodes come from the run's split.json (its held_out list) or, with --data, from a whole dataset.
Rollout scenes: episode i of evaluation seed s runs in simulator seed 3*2**30 + s*2**16 + i, a range that
generate_demos never uses; each task's variations whose instruction the model was trained on (all of them with
--all-variations, a generalisation figure) are shuffled per (seed, task) and cycled. --processes N runs the
rollouts in N simulator processes (same scenes and outcomes as one process). --blind-control repeats every
rollout with an empty instruction (the instruction-blind control, beside the success figures in the CSVs).
--probe-steps N also trains fresh alignment heads on each frozen model and its training split
(probes/<model>/) and reports Recall@1 through them (alignment_probe), the paper's "spontaneous alignment".
--rollout-alignment reports Recall@1 on the rollouts themselves, split into those that succeeded and failed
(paper Fig. 3).
Writes results.json, eval_results.csv (per task), summary.csv (per model), success.png, recognition.png,
tsne.png and the aligned embeddings (npz) into --out; with --videos also an annotated GIF of every rollout
(videos/<model>/<task>_seed<s>_ep<i>_{success|failure}.gif, its path in the episode's results entry), and
with --point-clouds a PLY per keyframe step (point_clouds/<model>/, see rollout_point_cloud).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mirror.evaluation.errors import EvaluationError
from mirror.evaluation.runner import EvaluationSettings, run_evaluation
from mirror.precision import INFERENCE_PRECISIONS
from mirror.training.run_directory import FINAL_DIR
from mirror_common.cli import console_main
from mirror_common.errors import CheckpointError
from sim_bridge.actions import MAX_KEYFRAMES
from sim_bridge.errors import DatasetError, SimError

log = logging.getLogger("evaluate")

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoints",
        "--checkpoint",
        nargs="+",
        type=Path,
        required=True,
        help="run directories (their final/ model) or model directories",
    )
    parser.add_argument("--names", nargs="+", help="one name per checkpoint (default: folder names)")
    parser.add_argument(
        "--data", type=Path, help="held-out dataset (default: each run's split.json held_out)"
    )
    parser.add_argument("--out", type=Path, default=Path("eval"), help="output directory (default: eval)")
    parser.add_argument("--tasks", nargs="+", default=[], help="restrict to these tasks")
    parser.add_argument("--episodes", type=int, default=25, help="rollouts per task and seed (default 25)")
    parser.add_argument("--max-steps", type=int, default=MAX_KEYFRAMES, help="keyframes per rollout (25)")
    parser.add_argument("--eval-seeds", nargs="+", type=int, default=[0, 1, 2], help="default: 0 1 2")
    parser.add_argument("--top-k", type=int, default=5, help="also report top-k recognition (default 5)")
    parser.add_argument(
        "--pairing",
        choices=["episode", "instruction", "class"],
        help="Recall@1's headline positives, also the probe's (default: each model's training pairing); "
        "models trained with different pairings are only comparable under one",
    )
    parser.add_argument("--max-pairs-per-episode", type=int, help="alignment pairs per held-out episode")
    parser.add_argument(
        "--planning-time", type=float, help="planner seconds per keyframe (simulator default)"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument(
        "--precision", choices=INFERENCE_PRECISIONS, default="fp32",
        help="inference compute: fp32, or bf16 / fp16 autocast with float32 weights (MirrorAgent)",
    )  # fmt: skip
    parser.add_argument(
        "--coarse-prior", type=float, default=0.0,
        help="place each keyframe where the fine stage's score times the coarse stage's score to this power "
        "is highest (0, as trained: the fine stage alone)",
    )  # fmt: skip
    parser.add_argument("--tsne-max-points", type=int, default=2000)
    parser.add_argument(
        "--processes", type=int, default=1, help="simulator processes for the rollouts (one per core)"
    )
    parser.add_argument(
        "--all-variations",
        action="store_true",
        help="roll out every variation, not only those whose instruction the model was trained on",
    )
    parser.add_argument("--skip-rollouts", action="store_true")
    parser.add_argument("--skip-recognition", action="store_true")
    parser.add_argument("--skip-alignment", action="store_true")
    parser.add_argument(
        "--probe-steps",
        type=int,
        default=0,
        help="also measure Recall@1 through alignment heads probed for this many steps on the frozen models "
        "and their training split (paper Sec. 2.2; the fair measure for a baseline); 0 = off",
    )
    parser.add_argument(
        "--probe-data", type=Path, help="training data for the probes (default: each model's own data root)"
    )
    parser.add_argument(
        "--rollout-alignment",
        action="store_true",
        help="also measure Recall@1 on the rollouts, separately for those that succeeded and failed (paper "
        "Fig. 3; renders every control tick, so rollouts get slower)",
    )
    parser.add_argument(
        "--blind-control",
        action="store_true",
        help="also roll out the same scenes with an empty instruction: the instruction-blind control that "
        "every success figure should sit beside (doubles the rollout time)",
    )
    parser.add_argument(
        "--videos",
        action="store_true",
        help="write one annotated GIF per rollout (front camera, instruction, predicted keyframes, outcome) "
        "to <out>/videos/<model>/<task>_seed<s>_ep<i>_{success|failure}.gif; rollouts get slower",
    )
    parser.add_argument(
        "--point-clouds",
        action="store_true",
        help="write the fused point cloud the policy saw at every keyframe step, with the predicted "
        "keyframe, to <out>/point_clouds/<model>/<task>_seed<s>_ep<i>_step<k>.ply (needs open3d: "
        "pip install -e '.[pointcloud]')",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def default_names(checkpoints: list[Path]) -> list[str]:
    """Folder names; a run's ``final`` model is named after its run."""
    names = []
    for path in checkpoints:
        resolved = path.resolve()
        names.append(resolved.parent.name if resolved.name == FINAL_DIR else resolved.name)
    if len(set(names)) != len(names):  # e.g. two runs' step_00001000: fall back to unique positions
        names = [f"{n}_{i}" for i, n in enumerate(names)]
    return names


@console_main
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level), format="%(levelname)s %(name)s: %(message)s")
    names = args.names or default_names(args.checkpoints)
    if len(names) != len(args.checkpoints):
        parser.error(f"--names gives {len(names)} names for {len(args.checkpoints)} checkpoints")
    if len(set(names)) != len(names):
        parser.error(f"--names must be distinct, got {names}")
    settings = EvaluationSettings(
        tasks=tuple(args.tasks),
        episodes=args.episodes,
        max_steps=args.max_steps,
        eval_seeds=tuple(args.eval_seeds),
        top_k=args.top_k,
        pairing=args.pairing,
        max_pairs_per_episode=args.max_pairs_per_episode,
        data=args.data,
        recognition=not args.skip_recognition,
        alignment=not args.skip_alignment,
        rollouts=not args.skip_rollouts,
        device=args.device,
        precision=args.precision,
        coarse_prior=args.coarse_prior,
        planning_time=args.planning_time,
        progress=not args.no_progress,
        tsne_max_points=args.tsne_max_points,
        processes=args.processes,
        all_variations=args.all_variations,
        blind_control=args.blind_control,
        probe_steps=args.probe_steps,
        rollout_alignment=args.rollout_alignment,
        probe_data=args.probe_data,
        videos=args.videos,
        point_clouds=args.point_clouds,
    )
    try:
        settings.validate()
    except ValueError as err:
        parser.error(str(err))
    try:
        results = run_evaluation(args.checkpoints, names, settings, args.out)
    except (EvaluationError, CheckpointError, DatasetError, SimError) as err:
        log.error("%s", err)
        return EXIT_USAGE
    for name, model in results["models"].items():
        log.info("%s: %s", name, _headline(model))
    log.info("wrote %s in %s", ", ".join(sorted(results["files"].values())), args.out)
    return 0


def _headline(model: dict) -> str:
    parts = []
    if "recognition" in model:
        r = model["recognition"]
        parts.append(
            f"recognition top-1 {100 * r['overall']['top1']:.1f}% (chance {100 * r['chance_top1']:.1f}%)"
        )
    if "alignment" in model:
        a = model["alignment"]
        parts.append(f"Recall@1 ({a['pairing']}) {100 * a[a['pairing']]['mean']:.1f}%")
    if "execution" in model:
        e = model["execution"]["overall"]
        parts.append(f"success {100 * e['success_mean']:.1f} +- {100 * e['success_std']:.1f}%")
    for label, split in model.get("execution_by_instruction", {}).items():  # --all-variations
        blind = model.get("execution_blind_by_instruction", {}).get(label)
        control = f" (blind {100 * blind['overall']['success_mean']:.1f}%)" if blind else ""
        parts.append(f"{label} instructions {100 * split['overall']['success_mean']:.1f}%{control}")
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
