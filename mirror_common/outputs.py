"""Output directories given on a command line (``evaluate --videos``, ``mirror_bringup --videos/--record``),
checked before any slow work starts so that a typo does not surface after an hour of rollouts. Imports
nothing heavy: ``mirror_bringup`` checks its options with it before starting the stack."""

from __future__ import annotations

import os
from pathlib import Path

from mirror_common.errors import MirrorError


class OutputDirectoryError(MirrorError, ValueError):
    """An output directory that cannot be used (a file is in the way, no permission)."""


def prepare_output_directory(path: str | os.PathLike, what: str) -> Path:
    """``path`` as an existing, writable directory (created with its parents), absolute."""
    directory = Path(os.path.expanduser(str(path))).absolute()
    if directory.exists() and not directory.is_dir():
        raise OutputDirectoryError(f"{what} {directory} exists and is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputDirectoryError(f"cannot create {what} {directory}: {err}") from err
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputDirectoryError(f"{what} {directory} is not writable")
    return directory
