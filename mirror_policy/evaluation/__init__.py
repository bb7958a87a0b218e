"""Evaluation of Mirror checkpoints with the paper's protocol: instruction recognition among all
instructions (action understanding), bidirectional Recall@1 of the aligned representations, and closed-loop
success in the simulator (embodied execution), with results files and figures. Entry point:
``mirror_policy.evaluation.evaluate:main``."""

from mirror_policy.evaluation.errors import (
    CheckpointNotFoundError,
    EmptyHeldOutError,
    EvaluationError,
    SeedCollisionError,
)
from mirror_policy.evaluation.rollout import EpisodeOutcome, KeyframePolicy, run_episode
from mirror_policy.evaluation.rollout_pool import run_planned_rollouts
from mirror_policy.evaluation.runner import EvaluationSettings, evaluate_model, run_evaluation

__all__ = [
    "CheckpointNotFoundError",
    "EmptyHeldOutError",
    "EpisodeOutcome",
    "EvaluationError",
    "EvaluationSettings",
    "KeyframePolicy",
    "SeedCollisionError",
    "evaluate_model",
    "run_episode",
    "run_evaluation",
    "run_planned_rollouts",
]
