"""Typed errors of the evaluation tool, so the command line can tell a user exactly what is wrong."""

from __future__ import annotations

from mirror_common.errors import MirrorError


class EvaluationError(MirrorError):
    """Base class of every error the evaluation raises on purpose."""


class CheckpointNotFoundError(EvaluationError, FileNotFoundError):
    """A checkpoint or run directory that does not exist or holds no model."""


class EmptyHeldOutError(EvaluationError):
    """No held-out episode for recognition / alignment (empty split, empty dataset, task filter)."""


class SeedCollisionError(EvaluationError):
    """An evaluation seed that a demonstration was generated from (its scene would not be unseen)."""
