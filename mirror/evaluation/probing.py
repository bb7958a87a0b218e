"""Alignment probing for ``evaluate`` (paper Sec. 2.2, "spontaneous alignment").

Recall@1 through the alignment heads as trained says nothing about a model whose heads never trained (the
no-mirror baseline, ``align_weight: 0``). Probing trains fresh heads T_u, T_e on the frozen ViCLIP and ARP
(``train_joint --probe``) on the model's own training split, with the model's own training config, and the
held-out Recall@1 is measured through those heads: the same measurement for every model, whatever its loss.
Models trained with different pairings (the paper's Table 3 ablation) are compared by probing (and scoring)
every one with one given pairing: a probe trained on episode positives learns another task than one trained
on instruction positives.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from mirror.evaluation.errors import EvaluationError
from mirror.model import MirrorModel
from mirror.training.config import INIT_PARTS, TrainConfig, TrainConfigError
from mirror.training.distributed import setup_distributed
from mirror.training.run_directory import FINAL_DIR
from mirror_common.errors import CheckpointError

log = logging.getLogger(__name__)

PROBES_DIR = "probes"  # <out>/probes/<model>/: the probe run of each model (its final/ holds the heads)
DEFAULT_PROBE_ALIGN_WEIGHT = 0.5  # the paper's lambda, for a model trained without the alignment loss


def stored_train_config(model_dir: Path) -> dict:
    """The training config recorded in ``model_dir``'s extra.json (what a probe starts from)."""
    stored = (MirrorModel.read_extra(model_dir) or {}).get("train_config")
    if not isinstance(stored, dict):
        raise EvaluationError(
            f"{model_dir} has no training config in its extra.json: cannot probe it on its training split"
        )
    return stored


def probe_config(
    model_dir: Path,
    steps: int,
    out: Path,
    data_root: Path | None,
    device: str,
    progress: bool,
    pairing: str | None = None,
) -> TrainConfig:
    """The probe run of ``model_dir``: its own training config (data, split, batch, seed, heads' optimizer)
    with ``probe`` on, ``init`` = the model, ``steps`` steps, samples read lazily (no preload) and the heads'
    positives paired by ``pairing`` (None: the model's own training pairing)."""
    try:
        config = TrainConfig.from_dict(stored_train_config(model_dir))
        config.probe, config.init, config.init_parts = True, str(model_dir), list(INIT_PARTS)
        config.alignment.pairing = pairing or config.alignment.pairing
        config.steps, config.stop_after, config.out = steps, 0, str(out)
        config.eval_every = config.checkpoint_every = steps
        config.keep_checkpoints, config.progress, config.device = 1, progress, device
        config.align_weight = config.align_weight or DEFAULT_PROBE_ALIGN_WEIGHT
        config.data.cache = False
        if data_root is not None:
            config.data.root = str(data_root)
        config.validate()
    except TrainConfigError as err:
        raise EvaluationError(f"cannot probe {model_dir}: {err}") from err
    if not Path(config.data.root).is_dir():
        raise EvaluationError(
            f"cannot probe {model_dir}: its training data {config.data.root} is not here; pass --probe-data"
        )
    return config


def probed_model_dir(
    model_dir: Path,
    steps: int,
    out: Path,
    data_root: Path | None,
    device: str = "cpu",
    progress: bool = True,
    pairing: str | None = None,
) -> Path:
    """The model with probed heads (``out/final``), trained now unless a finished probe of the same model,
    step count and pairing (:func:`probe_config`) is already there."""
    from mirror.training.trainer import MirrorTrainer

    final = out / FINAL_DIR
    try:
        done = MirrorModel.read_extra(final) or {}
    except CheckpointError:
        done = {}
    config = done.get("train_config") or {}
    wanted = pairing or stored_train_config(model_dir)["alignment"]["pairing"]
    same = config.get("init") == str(model_dir) and config.get("alignment", {}).get("pairing") == wanted
    if done.get("step") == steps and config.get("probe") and same:
        log.info("probe of %s: reusing %s", model_dir, final)
        return final
    settings = probe_config(model_dir, steps, out, data_root, device, progress, pairing)
    if out.exists():  # an unfinished or different probe: this folder is evaluate's own, start it afresh
        log.info("probe of %s: replacing %s", model_dir, out)
        shutil.rmtree(out)
    try:
        MirrorTrainer(settings, setup_distributed(device)).run()
    except TrainConfigError as err:
        raise EvaluationError(f"cannot probe {model_dir}: {err}") from err
    return final
