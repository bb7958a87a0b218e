"""Evaluation of Mirror checkpoints with the paper's protocol: instruction recognition among all
instructions (action understanding), bidirectional Recall@1 of the aligned representations, and closed-loop
success in the simulator (embodied execution), with results files and figures. Entry point:
``mirror.evaluation.evaluate:main``."""

from mirror.evaluation.errors import (
    CheckpointNotFoundError,
    EmptyHeldOutError,
    EvaluationError,
    SeedCollisionError,
)
from mirror.evaluation.rollout import EpisodeOutcome, KeyframePolicy, run_episode
from mirror.evaluation.rollout_pool import run_planned_rollouts
from mirror.evaluation.runner import EvaluationSettings, evaluate_model, run_evaluation

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
