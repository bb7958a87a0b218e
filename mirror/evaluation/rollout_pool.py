"""Running a model's planned rollouts, in this process or in several simulator processes at once.

Rollouts dominate an evaluation's time (one simulator, one core), and each is independent of the others, so
``processes > 1`` spreads them over worker processes, each with its own simulator and its own copy of the
model on one torch thread. Every rollout's scene and variation come from its plan (``seeds``), never from
the worker that runs it, so the outcomes are the same whichever process runs which episode.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mirror.agent import MirrorAgent
from mirror.evaluation.execution_alignment import ExecutionFeatureRecorder, ExecutionFeatures
from mirror.evaluation.rollout import EpisodeOutcome, RolloutObserver, RolloutPlan, run_episode
from mirror.evaluation.rollout_point_cloud import PointCloudRecorder
from mirror.evaluation.rollout_video import RolloutVideoRecorder
from mirror.model import MirrorModel
from sim_bridge.backend import SimBackend


@dataclass(frozen=True)
class RolloutJob:
    """What a rollout needs besides its plan; picklable, so that workers can rebuild the model."""

    model_dir: Path
    max_steps: int
    device: str = "cpu"
    planning_time: float | None = None
    video_dir: Path | None = None
    point_cloud_dir: Path | None = None
    blind: bool = False  # the instruction-blind control (run_episode)
    features: bool = False  # keep each rollout's u and e (execution_alignment; renders every tick)
    precision: str = "fp32"  # the agent's inference compute (MirrorAgent)
    coarse_prior: float = 0.0  # the weight of ARP's coarse stage in placing a keyframe (MirrorAgent)


@dataclass
class RolloutResult:
    outcome: EpisodeOutcome
    video: Path | None
    point_clouds: list[Path]
    features: ExecutionFeatures | None = None


def embedded_simulator(image_size: int, planning_time: float | None) -> SimBackend:
    """The embedded PyBullet simulator rendering at the resolution the policy expects."""
    from sim_bridge.bullet.env import BulletBackend, BulletConfig

    config = BulletConfig(image_size=image_size)
    if planning_time is not None:
        config.planning_time = planning_time
    return BulletBackend(config)


def run_one(env: SimBackend, agent: MirrorAgent, job: RolloutJob, plan: RolloutPlan) -> RolloutResult:
    """One planned rollout, filmed / captured as the job asks."""
    observers: list[RolloutObserver] = []
    video = cloud = recorder = None
    if job.features:
        recorder = ExecutionFeatureRecorder(agent.config.camera_for_video)
        observers.append(recorder)
    if job.video_dir is not None:
        video = RolloutVideoRecorder(job.video_dir, job.max_steps)
        observers.append(video)
    if job.point_cloud_dir is not None:
        cloud = PointCloudRecorder(job.point_cloud_dir, agent.config.arp, plan)
        observers.append(cloud)
    outcome = run_episode(
        env, agent, plan.task, plan.variation, plan.env_seed, job.max_steps, plan.eval_seed, plan.episode,
        observers, job.blind,
    )  # fmt: skip
    return RolloutResult(
        outcome, video.path if video else None, list(cloud.paths) if cloud else [],
        recorder.features(agent) if recorder else None,
    )  # fmt: skip


_WORKER: tuple[SimBackend, MirrorAgent, RolloutJob] | None = None


def _init_worker(job: RolloutJob) -> None:
    import torch

    global _WORKER
    torch.set_num_threads(1)
    agent = MirrorAgent(
        MirrorModel.from_pretrained(job.model_dir, map_location=job.device),
        job.device,
        job.precision,
        job.coarse_prior,
    )
    _WORKER = (embedded_simulator(agent.config.arp.camera_resolution, job.planning_time), agent, job)


def _run_indexed(item: tuple[int, RolloutPlan]) -> tuple[int, RolloutResult]:
    assert _WORKER is not None, "worker not initialised"
    env, agent, job = _WORKER
    index, plan = item
    return index, run_one(env, agent, job, plan)


def run_planned_rollouts(
    job: RolloutJob,
    plans: Sequence[RolloutPlan],
    processes: int = 1,
    agent: MirrorAgent | None = None,
    env: SimBackend | None = None,
    on_result: Callable[[RolloutResult], None] | None = None,
) -> list[RolloutResult]:
    """Every plan's result, in plan order. With one process, ``agent`` and ``env`` run them here; with more,
    worker processes (spawned, so no simulator state is shared) load the model from ``job.model_dir``."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    if processes == 1 or len(plans) <= 1:
        if agent is None or env is None:
            raise ValueError("running rollouts in this process needs the agent and a simulator")
        results = []
        for plan in plans:
            results.append(run_one(env, agent, job, plan))
            if on_result is not None:
                on_result(results[-1])
        return results
    ordered: dict[int, RolloutResult] = {}
    with mp.get_context("spawn").Pool(min(processes, len(plans)), _init_worker, (job,)) as pool:
        for index, result in pool.imap_unordered(_run_indexed, list(enumerate(plans))):
            ordered[index] = result
            if on_result is not None:
                on_result(result)
    return [ordered[i] for i in range(len(plans))]
