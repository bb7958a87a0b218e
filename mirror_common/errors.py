"""Error types that more than one layer raises, so a caller catches one type whichever layer failed."""

from __future__ import annotations


class MirrorError(Exception):
    """Base of every error this project raises on purpose (bad input, a bad file, a setting to fix): what a
    console script reports as one line and exit code 2 instead of a traceback (:mod:`mirror_common.cli`)."""


class CheckpointError(MirrorError):
    """A checkpoint that cannot be read, or whose content is not the model it is loaded as (a ViCLIP state
    dict, a mirror model directory, a training run's trainer state)."""
