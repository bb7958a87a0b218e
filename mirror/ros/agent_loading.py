"""Loading the MirrorAgent of a node from its ``checkpoint`` parameter, with errors that say what to fix."""

from __future__ import annotations

from pathlib import Path

import torch

from mirror.agent import MirrorAgent
from mirror.precision import INFERENCE_PRECISIONS
from mirror.ros.launch_config import data_root, resolve_data_path
from mirror_common.errors import MirrorError
from mirror_common.ros.node_runtime import NodeStartupError


def load_agent(
    checkpoint: str,
    device: str = "cpu",
    threads: int = 0,
    precision: str = "fp32",
    coarse_prior: float = 0.0,
) -> tuple[MirrorAgent, Path]:
    """``(MirrorAgent, resolved checkpoint directory)``; :class:`NodeStartupError` when it cannot be loaded.

    ``threads`` > 0 caps torch's intra-op threads (several model processes share small machines);
    ``precision`` and ``coarse_prior`` are :class:`MirrorAgent`'s.
    """
    if precision not in INFERENCE_PRECISIONS:
        raise NodeStartupError(
            f"parameter 'precision' must be one of {INFERENCE_PRECISIONS}, got {precision!r}"
        )
    if not coarse_prior >= 0:
        raise NodeStartupError(f"parameter 'coarse_prior' must be >= 0, got {coarse_prior!r}")
    if not isinstance(checkpoint, str) or not checkpoint.strip():
        raise NodeStartupError(
            "parameter 'checkpoint' is empty: pass checkpoint:=<MirrorModel checkpoint dir>"
        )
    path = resolve_data_path(checkpoint)
    if not path.is_dir():
        raise NodeStartupError(
            f"checkpoint directory {path} does not exist (parameter checkpoint={checkpoint!r}; relative "
            f"paths resolve against {data_root()}). Train one with train_joint or pass checkpoint:=<dir>."
        )
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        agent = MirrorAgent.from_pretrained(path, device, precision, coarse_prior)
    except (MirrorError, OSError, RuntimeError, ValueError) as err:
        raise NodeStartupError(f"cannot load checkpoint {path}: {err}") from err
    return agent, path
