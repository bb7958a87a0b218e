"""The evaluation of one or several checkpoints under one protocol: held-out recognition and alignment,
closed-loop rollouts, then the results files and figures (see ``evaluate`` for the command line)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mirror.agent import MirrorAgent
from mirror.alignment import PAIRINGS
from mirror.evaluation import plots
from mirror.evaluation.alignment_metrics import AlignmentPairs, alignment_metrics
from mirror.evaluation.errors import EvaluationError
from mirror.evaluation.execution_alignment import outcome_alignment
from mirror.evaluation.execution_metrics import summarize_by_instruction, summarize_execution
from mirror.evaluation.held_out import HeldOutEpisode, held_out_from_dataset, held_out_from_split
from mirror.evaluation.held_out_eval import evaluate_held_out
from mirror.evaluation.model_source import ResolvedCheckpoint, resolve_checkpoint
from mirror.evaluation.probing import PROBES_DIR, probed_model_dir
from mirror.evaluation.recognition import summarize_recognition
from mirror.evaluation.reporting import file_stem as _file_stem
from mirror.evaluation.reporting import write_results
from mirror.evaluation.rollout import EpisodeOutcome, RolloutPlan, plan_rollouts
from mirror.evaluation.rollout_point_cloud import require_open3d
from mirror.evaluation.rollout_pool import (
    RolloutJob,
    RolloutResult,
    embedded_simulator,
    run_planned_rollouts,
)
from mirror.evaluation.seeds import EPISODE_STRIDE, MAX_EVAL_SEED, check_disjoint
from mirror.evaluation.seeds import __doc__ as SEED_RULES
from mirror.model import MirrorModel
from mirror.precision import INFERENCE_PRECISIONS
from mirror_common.outputs import OutputDirectoryError, prepare_output_directory
from sim_bridge.actions import MAX_KEYFRAMES
from sim_bridge.backend import SimBackend

log = logging.getLogger(__name__)

VIDEOS_DIR = "videos"  # <out>/videos/<model>/<task>_seed<s>_ep<i>_{success|failure}.gif
POINT_CLOUDS_DIR = "point_clouds"  # <out>/point_clouds/<model>/<task>_seed<s>_ep<i>_step<k>.ply


@dataclass
class EvaluationSettings:
    """The protocol (defaults = the paper's: 25 episodes per task, at most 25 keyframes, 3 seeds)."""

    tasks: tuple[str, ...] = ()  # empty: the held-out tasks, else the tasks of the model's vocabulary
    episodes: int = 25  # rollouts per task and evaluation seed
    max_steps: int = MAX_KEYFRAMES
    eval_seeds: tuple[int, ...] = (0, 1, 2)
    top_k: int = 5
    pairing: str | None = None  # Recall@1's headline positives and the probe's; None: the model's own
    max_pairs_per_episode: int | None = None
    data: Path | None = None  # held-out dataset overriding the runs' split.json
    recognition: bool = True
    alignment: bool = True
    rollouts: bool = True
    device: str = "cpu"
    precision: str = "fp32"  # the agent's inference compute (MirrorAgent): fp32, bf16 or fp16 autocast
    coarse_prior: float = 0.0  # the weight of ARP's coarse stage in placing a keyframe (MirrorAgent)
    planning_time: float | None = None  # simulator planner budget per keyframe (None: its default)
    progress: bool = True
    tsne_max_points: int = 2000
    processes: int = 1  # simulator processes for the rollouts (each with its own copy of the model)
    all_variations: bool = False  # roll out every variation, not only those with a trained instruction
    blind_control: bool = False  # also roll out the same scenes with an empty instruction (run_episode)
    probe_steps: int = 0  # > 0: also Recall@1 through heads probed for this many steps (probing.py)
    probe_data: Path | None = None  # the training data of the probes (default: each model's own data.root)
    rollout_alignment: bool = False  # Recall@1 on the rollouts, succeeded vs failed (execution_alignment)
    videos: bool = False  # one annotated GIF per rollout under <out>/videos/<model>/
    point_clouds: bool = False  # one PLY per keyframe step under <out>/point_clouds/<model>/ (needs open3d)
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.episodes < 1 or self.episodes > EPISODE_STRIDE:
            raise ValueError(f"episodes must lie in [1, {EPISODE_STRIDE}], got {self.episodes}")
        if self.processes < 1:
            raise ValueError(f"processes must be >= 1, got {self.processes}")
        if self.precision not in INFERENCE_PRECISIONS:
            raise ValueError(f"precision must be one of {INFERENCE_PRECISIONS}, got {self.precision!r}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.coarse_prior < 0:
            raise ValueError(f"coarse_prior must be >= 0, got {self.coarse_prior}")
        if not self.eval_seeds:
            raise ValueError("need at least one evaluation seed")
        bad = [s for s in self.eval_seeds if not 0 <= s < MAX_EVAL_SEED]
        if bad:
            raise ValueError(f"evaluation seeds must lie in [0, {MAX_EVAL_SEED}), got {bad}")
        if len(set(self.eval_seeds)) != len(self.eval_seeds):
            raise ValueError(f"evaluation seeds repeat: {list(self.eval_seeds)}")
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.pairing is not None and self.pairing not in PAIRINGS:
            raise ValueError(f"pairing must be one of {PAIRINGS}, got {self.pairing!r}")
        if self.probe_steps < 0:
            raise ValueError(f"probe_steps must be >= 0, got {self.probe_steps}")
        if self.probe_steps and not self.alignment:
            raise ValueError("probing measures alignment, which is skipped")
        if self.rollout_alignment and not self.rollouts:
            raise ValueError("rollout alignment is measured on the rollouts, which are skipped")
        if self.max_pairs_per_episode is not None and self.max_pairs_per_episode < 1:
            raise ValueError("max_pairs_per_episode must be >= 1")
        if self.planning_time is not None and not self.planning_time > 0:
            raise ValueError(f"planning_time must be positive, got {self.planning_time}")
        if not (self.recognition or self.alignment or self.rollouts):
            raise ValueError("everything is skipped: nothing to evaluate")
        if (self.videos or self.point_clouds) and not self.rollouts:
            raise ValueError("videos and point clouds show the rollouts, which are skipped")

    def to_dict(self) -> dict:
        data = asdict(self)
        data["data"] = None if self.data is None else str(self.data)
        data["probe_data"] = None if self.probe_data is None else str(self.probe_data)
        return data


@dataclass
class ModelEvaluation:
    """Everything measured for one checkpoint."""

    name: str
    results: dict
    pairs: AlignmentPairs | None = None
    outcomes: list[EpisodeOutcome] = field(default_factory=list)


def registered_tasks() -> list[str]:
    import sim_bridge.tasks  # noqa: F401  (registers the embedded tasks)
    from sim_bridge.tasks.base import TASKS

    return sorted(TASKS)


def validate_tasks(tasks: Sequence[str]) -> None:
    from sim_bridge.errors import UnknownTaskError

    known = registered_tasks()
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise UnknownTaskError(f"unknown task(s) {unknown}; the simulator has {known}")


def tasks_of_instructions(instructions: Sequence[str]) -> list[str]:
    """The registered tasks that can produce any of ``instructions`` (over all their variations)."""
    from sim_bridge.tasks import make_task

    wanted = set(instructions)
    found = []
    for name in registered_tasks():
        task = make_task(name)
        if any(wanted & set(task.descriptions(v)) for v in range(task.variation_count())):
            found.append(name)
    return found


def rollout_variations(
    tasks: Sequence[str], vocabulary: Sequence[str], all_variations: bool = False
) -> dict[str, list[int]]:
    """Per task, the variations to roll out: those whose canonical instruction (the one a rollout gives the
    policy) the model was trained on, as the paper evaluates its trained variations; or every variation with
    ``all_variations`` (a generalisation figure: the others' instructions are new to the model)."""
    from sim_bridge.tasks import make_task

    known = set(vocabulary)
    chosen = {}
    for name in tasks:
        task = make_task(name)
        every = list(range(task.variation_count()))
        chosen[name] = every if all_variations else [v for v in every if task.descriptions(v)[0] in known]
        if not chosen[name]:
            raise EvaluationError(
                f"the model knows no instruction of {name}'s variations; pass --all-variations to roll it "
                "out on instructions it never saw"
            )
    return chosen


def held_out_for(
    resolved: ResolvedCheckpoint, settings: EvaluationSettings
) -> tuple[list[HeldOutEpisode], str]:
    """The held-out episodes and where they came from (``--data`` wins over the run's split)."""
    if settings.data is not None:
        return held_out_from_dataset(settings.data, settings.tasks), f"dataset {settings.data} (all episodes)"
    if resolved.split_file is None:
        raise EvaluationError(
            f"{resolved.model_dir} has no split.json beside it (not a train_joint run); pass "
            "--data <held-out dataset>, or --skip-recognition --skip-alignment to run rollouts only"
        )
    return held_out_from_split(resolved.split_file, settings.tasks), f"held_out of {resolved.split_file}"


def evaluate_model(
    name: str,
    checkpoint: Path | str,
    settings: EvaluationSettings,
    env: SimBackend | None = None,
    video_dir: Path | None = None,
    point_cloud_dir: Path | None = None,
    probe_dir: Path | None = None,
) -> ModelEvaluation:
    """Evaluate one checkpoint; ``env`` is needed when rollouts are on; with ``video_dir`` every rollout is
    filmed there (:class:`~mirror.evaluation.rollout_video.RolloutVideoRecorder`), with
    ``point_cloud_dir`` its keyframe steps are written there as PLY (:mod:`.rollout_point_cloud`); with
    ``settings.probe_steps`` the heads are also probed (in ``probe_dir``) and Recall@1 measured through
    them."""
    resolved = resolve_checkpoint(checkpoint)
    agent = MirrorAgent(MirrorModel.from_pretrained(resolved.model_dir, map_location=settings.device),
                        settings.device, settings.precision, settings.coarse_prior)  # fmt: skip
    vocabulary = list(agent.config.instructions)
    pairing = settings.pairing or agent.config.alignment.pairing
    results: dict = {
        "checkpoint": str(resolved.model_dir),
        "split_file": None if resolved.split_file is None else str(resolved.split_file),
        "vocabulary_size": len(vocabulary),
        "vocabulary": vocabulary,  # which rolled-out instructions the model was trained on
        "precision": settings.precision,
        "coarse_prior": settings.coarse_prior,
    }
    evaluation = ModelEvaluation(name, results)
    probed_agent: MirrorAgent | None = None
    held_out: list[HeldOutEpisode] = []
    demo_seeds: list[int] = []
    if settings.recognition or settings.alignment:
        if settings.recognition and not vocabulary:
            raise EvaluationError(
                f"{resolved.model_dir} has an empty instruction vocabulary: cannot recognise"
            )
        held_out, source = held_out_for(resolved, settings)
        results["held_out"] = {
            "source": source,
            "episodes": len(held_out),
            "tasks": sorted({e.task for e in held_out}),
        }
        records, pairs, demo_seeds = evaluate_held_out(
            agent, held_out, settings.recognition, settings.alignment, settings.top_k,
            settings.max_pairs_per_episode, settings.progress, f"{name}: held-out",
        )  # fmt: skip
        if settings.recognition:
            results["recognition"] = summarize_recognition(records, len(vocabulary), settings.top_k)
            results["recognition"]["records"] = [r.to_dict() for r in records]
        if settings.alignment and pairs is not None:
            results["alignment"] = {"pairing": pairing, **alignment_metrics(pairs)}
            evaluation.pairs = pairs
        if settings.probe_steps and pairs is not None:
            if probe_dir is None:
                raise ValueError("probing needs a probe_dir")
            probed = probed_model_dir(
                resolved.model_dir, settings.probe_steps, probe_dir, settings.probe_data, settings.device,
                settings.progress, pairing,
            )  # fmt: skip
            probed_model = MirrorModel.from_pretrained(probed, map_location=settings.device)
            probed_agent = MirrorAgent(
                probed_model, settings.device, settings.precision, settings.coarse_prior
            )
            # the encoders are frozen, so the held-out u and e are the same: only the heads change
            results["alignment_probe"] = {
                "pairing": pairing, "probe_steps": settings.probe_steps, "model": str(probed),
                **alignment_metrics(pairs.through(probed_agent)),
            }  # fmt: skip
    if settings.rollouts:
        if env is None and settings.processes == 1:
            raise ValueError("rollouts in this process need a simulator (env)")
        tasks = (
            list(settings.tasks) or sorted({e.task for e in held_out}) or tasks_of_instructions(vocabulary)
        )
        if not tasks:
            raise EvaluationError(
                "no task to roll out: pass --tasks (the vocabulary matches no registered task)"
            )
        variations = rollout_variations(tasks, vocabulary, settings.all_variations)
        plans = plan_rollouts(tasks, variations, settings.eval_seeds, settings.episodes)
        check_disjoint([p.env_seed for p in plans], demo_seeds)
        results["rollout_variations"] = variations
        job = RolloutJob(
            resolved.model_dir, settings.max_steps, settings.device, settings.planning_time, video_dir,
            point_cloud_dir, features=settings.rollout_alignment, precision=settings.precision,
            coarse_prior=settings.coarse_prior,
        )  # fmt: skip
        rollouts = _rollouts(job, plans, settings, agent, env, f"{name}: rollouts")
        evaluation.outcomes = [r.outcome for r in rollouts]
        if settings.rollout_alignment:  # paper Fig. 3
            features = [r.features for r in rollouts]
            results["rollout_alignment"] = outcome_alignment(agent, evaluation.outcomes, features)
            if probed_agent is not None:
                results["rollout_alignment_probe"] = outcome_alignment(
                    probed_agent, evaluation.outcomes, features
                )
        if settings.blind_control:  # the same scenes, instruction-blind, never filmed
            blind_job = replace(job, video_dir=None, point_cloud_dir=None, blind=True, features=False)
            blind = [r.outcome for r in _rollouts(blind_job, plans, settings, agent, env, f"{name}: blind")]
            results["execution_blind"] = summarize_execution(blind, settings.eval_seeds)
            results["execution_blind"]["episodes"] = [o.to_dict() for o in blind]
            if settings.all_variations:
                results["execution_blind_by_instruction"] = summarize_by_instruction(
                    blind, vocabulary, settings.eval_seeds
                )
        results["execution"] = summarize_execution(evaluation.outcomes, settings.eval_seeds)
        if settings.all_variations:  # the generalisation figure apart from the trained instructions'
            results["execution_by_instruction"] = summarize_by_instruction(
                evaluation.outcomes, vocabulary, settings.eval_seeds
            )
        results["execution"]["episodes"] = [o.to_dict() for o in evaluation.outcomes]
        for episode, rollout in zip(results["execution"]["episodes"], rollouts):
            if video_dir is not None:
                episode["video"] = str(rollout.video)
            if point_cloud_dir is not None:
                episode["point_clouds"] = [str(p) for p in rollout.point_clouds]
    return evaluation


def _rollouts(
    job: RolloutJob,
    plans: Sequence[RolloutPlan],
    settings: EvaluationSettings,
    agent: MirrorAgent,
    env: SimBackend | None,
    description: str,
) -> list[RolloutResult]:
    with tqdm(total=len(plans), desc=description, unit="ep", disable=not settings.progress) as bar:

        def advance(result: RolloutResult) -> None:
            bar.set_postfix(task=result.outcome.task, success=result.outcome.success)
            bar.update(1)

        return run_planned_rollouts(job, plans, settings.processes, agent, env, advance)


def protocol_description(settings: EvaluationSettings) -> dict:
    return {
        "settings": settings.to_dict(),
        "recognition": "top-1/top-k among all instructions of the model's vocabulary; one uniform "
        "clip_frames-frame clip of the video camera per held-out episode",
        "alignment": "Recall@1 of cosine nearest-neighbour retrieval both ways between T_u u (clip) and "
        "T_e e (policy inference at frame 0 and every keyframe but the last of the same held-out demo); "
        "a hit shares the pair's key (episode / instruction / class)",
        "alignment_probe": "the same Recall@1 through fresh heads T_u, T_e trained for probe_steps steps on "
        "the frozen models and the model's training split (paper Sec. 2.2); the fair measure for a model "
        "whose heads never trained",
        "execution": "success by the task's condition after any keyframe; at most max_steps keyframes; a "
        "planning or invalid-action error ends the episode as a failure; std = sample std over eval seeds",
        "rollout_alignment": "Recall@1 on the rollouts (paper Fig. 3), over those that succeeded and those "
        "that failed: T_u u of the video camera's view of the whole rollout paired with T_e e of each of its "
        "keyframes (through the probed heads in rollout_alignment_probe)",
        "execution_blind": "the instruction-blind control: the same scenes and variations, the policy "
        "given an empty instruction (what a policy that ignores the instruction would score)",
        "seed_rule": " ".join(SEED_RULES.split()),
    }


def run_evaluation(
    checkpoints: Sequence[Path | str],
    names: Sequence[str],
    settings: EvaluationSettings,
    out_dir: Path | str,
    env: SimBackend | None = None,
) -> dict:
    """Evaluate every checkpoint, writing results.json / CSVs after each model and the figures at the end.

    Checkpoint paths and configs are checked before any (slow) evaluation starts. ``env`` defaults to the
    embedded PyBullet simulator rendering at each model's camera resolution, closed at the end.
    """
    settings.validate()
    if len(checkpoints) != len(names):
        raise ValueError(f"{len(checkpoints)} checkpoints but {len(names)} names")
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be distinct, got {list(names)}")
    validate_tasks(settings.tasks)
    configs = [MirrorModel.read_config(resolve_checkpoint(c).model_dir)[0] for c in checkpoints]  # fail early
    out_dir = Path(out_dir)
    if settings.point_clouds:
        require_open3d()
    try:  # before any slow work: a file in the way fails now
        video_dirs = _output_dirs(out_dir / VIDEOS_DIR, names if settings.videos else (), "video directory")
        cloud_dirs = _output_dirs(
            out_dir / POINT_CLOUDS_DIR, names if settings.point_clouds else (), "point cloud directory"
        )
    except OutputDirectoryError as err:
        raise EvaluationError(str(err)) from err
    own_envs: dict[int, SimBackend] = {}
    results: dict = {"protocol": protocol_description(settings), "models": {}, "files": {}}
    evaluations = []
    try:
        for checkpoint, name, config in zip(checkpoints, names, configs):
            model_env = env
            if settings.rollouts and model_env is None and settings.processes == 1:
                model_env = _simulator_for(config.arp.camera_resolution, settings, own_envs)
            probe_dir = out_dir / PROBES_DIR / _file_stem(name) if settings.probe_steps else None
            evaluation = evaluate_model(
                name, checkpoint, settings, model_env, video_dirs.get(name), cloud_dirs.get(name), probe_dir
            )
            evaluations.append(evaluation)
            results["models"][name] = evaluation.results
            if name in video_dirs:
                results["files"][f"videos_{name}"] = _relative(video_dirs[name], out_dir)
            if name in cloud_dirs:
                results["files"][f"point_clouds_{name}"] = _relative(cloud_dirs[name], out_dir)
            if evaluation.pairs is not None:
                path = _save_embeddings(out_dir, name, evaluation.pairs)
                results["files"][f"aligned_embeddings_{name}"] = _relative(path, out_dir)
            write_results(out_dir, results)
    finally:
        for simulator in own_envs.values():
            simulator.close()
    figures = _figures(evaluations, settings, out_dir)
    results["files"].update(_relative_paths(figures, out_dir))  # before write_results: results.json has them
    results["files"].update(_relative_paths(write_results(out_dir, results), out_dir))
    return results


def _relative(path: Path, out_dir: Path) -> str:
    """``path`` as results.json's ``files`` records it: relative to the results folder, so that the index
    stays true wherever the folder is moved or committed."""
    return path.relative_to(out_dir).as_posix()


def _relative_paths(paths: dict[str, Path], out_dir: Path) -> dict[str, str]:
    return {key: _relative(path, out_dir) for key, path in paths.items()}


def _output_dirs(root: Path, names: Sequence[str], what: str) -> dict[str, Path]:
    """``<root>/<model>/`` per model name, created now."""
    return {name: prepare_output_directory(root / _file_stem(name), what) for name in names}


def _simulator_for(image_size: int, settings: EvaluationSettings, cache: dict[int, SimBackend]) -> SimBackend:
    """The embedded simulator rendering at the resolution the policy expects (one per resolution)."""
    if image_size not in cache:
        cache[image_size] = embedded_simulator(image_size, settings.planning_time)
    return cache[image_size]


def _save_embeddings(out_dir: Path, name: str, pairs: AlignmentPairs) -> Path:
    """The aligned embeddings and their labels, to re-plot or re-analyse without re-running the models."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"aligned_embeddings_{_file_stem(name)}.npz"
    np.savez_compressed(
        path, z_u=pairs.z_u, z_e=pairs.z_e, tasks=np.array(pairs.tasks), episodes=np.array(pairs.episodes),
        instructions=np.array(pairs.instructions), steps=np.array(pairs.steps),
    )  # fmt: skip
    return path


def _figures(
    evaluations: Sequence[ModelEvaluation], settings: EvaluationSettings, out_dir: Path
) -> dict[str, Path]:
    files: dict[str, Path] = {}
    executions = {}
    for e in evaluations:  # each model beside its instruction-blind control
        for key, label in (("execution", e.name), ("execution_blind", f"{e.name} (instruction-blind)")):
            if key in e.results:
                executions[label] = e.results[key]
    if executions:
        files["success_plot"] = plots.plot_success(executions, out_dir / plots.SUCCESS_PLOT)
    recognitions = {e.name: e.results["recognition"] for e in evaluations if "recognition" in e.results}
    if recognitions:
        files["recognition_plot"] = plots.plot_recognition(recognitions, out_dir / plots.RECOGNITION_PLOT)
        for name, recognition in recognitions.items():
            path = out_dir / plots.confusion_plot_name(name)
            files[f"confusion_plot_{name}"] = plots.plot_confusion(recognition["confusion"], path, name)
    pairs = {e.name: e.pairs for e in evaluations if e.pairs is not None}
    if pairs:
        path, methods = plots.plot_aligned_space(
            pairs, out_dir / plots.TSNE_PLOT, max_points=settings.tsne_max_points
        )
        files["tsne_plot"] = path
        for e in evaluations:
            if e.name in methods:
                e.results["alignment"]["projection"] = methods[e.name]
    return files
