"""Error types that more than one layer raises, so a caller catches one type whichever layer failed."""

from __future__ import annotations


class CheckpointError(Exception):
    """A checkpoint that cannot be read, or whose content is not the model it is loaded as (a ViCLIP state
    dict, a mirror model directory, a training run's trainer state)."""
