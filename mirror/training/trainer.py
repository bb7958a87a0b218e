"""The joint training loop: ``L = L_AU + ee_weight * L_EE + align_weight * L_align`` (paper Eq. 5).

Per step (rank ``r``, step ``s``):

1. The paired batch of (s, r) (see :mod:`mirror.training.data`); language features of the EE
   instructions from ViCLIP's text tower, without gradient (ARP's frozen language encoder).
2. EE: ARP's teacher-forced loss and its last-block feature e.
3. AU: with probability ``au_update_prob`` (a Bernoulli draw seeded by the step, identical on all ranks) the
   step is an *AU step*: ViCLIP's video-text InfoNCE L_AU is computed, its video feature is u and ViCLIP's
   optimizer steps. Otherwise u comes from the same (masked, training-mode) video forward but without
   gradient, so ViCLIP is not updated; that forward runs on a second thread while ARP's runs
   (:class:`VideoFeatureThread`), its masking drawn from its own per-step random stream. Supplement C.3
   sets the "learning frequency of action recognition to 20%" to balance the training pace; we read that as
   ViCLIP learning on 20% of steps while the alignment (which needs u) and ARP learn on every step, so e is
   pulled towards u at every step.
4. Alignment: bidirectional InfoNCE on (u_i, e_i) with same-key positives. With ``align_weight == 0`` it is
   still computed, without gradient, for logging, so the no-mirror baseline runs exactly the same forward
   passes and random draws and differs only in the loss.
5. One backward of the weighted sum; LAMB for ARP, AdamW for the heads and (AU steps) for ViCLIP.

Probing (paper Sec. 2) freezes ViCLIP and ARP in eval mode and trains freshly initialised T_u / T_e only.
``precision: bf16`` (or ``fp16``, with a dynamic loss scale) runs the ARP and ViCLIP forward passes under
autocast (:func:`precision_autocast`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from mirror.alignment import alignment_recall_at_1, mutual_information_lower_bound
from mirror.model import MirrorModel
from mirror.precision import precision_autocast
from mirror.training import run_directory as ckpt
from mirror.training.config import TrainConfig, TrainConfigError
from mirror.training.data import (
    STREAM_AU_STEP,
    STREAM_MODEL,
    STREAM_VIDEO,
    EpisodeStore,
    PairedBatch,
    PairedBatchBuilder,
    StepBatches,
    build_eval_batch,
    form_transitions,
    identity_collate,
    scan_episodes,
    split_episodes,
    split_summary,
    step_rng,
    step_seed,
)
from mirror.training.distributed import DistInfo, barrier, gather_batch
from mirror.training.optim import build_optimizers, clip_gradients
from mirror_common.errors import CheckpointError
from mirror_common.serialization import atomic_write, write_json
from mirror_perception.modeling_viclip import ViCLIP
from mirror_perception.recognition import InstructionRecognizer
from mirror_perception.weights import load_official_checkpoint
from mirror_policy.arp.configuration import IDENTITY_AT_START_FIELDS

log = logging.getLogger(__name__)


class VideoFeatureThread:
    """Computes u (ViCLIP's video feature, without gradient) on a second thread while ARP trains.

    Why: the tiny CPU models cannot use two intra-op threads (the OpenMP hand-off per small op costs more than
    it saves), but the u of a non-AU step does not depend on ARP's forward pass, so the second core computes
    it meanwhile (~15% off such a step on the 2-core machine). Its randomness (token masking, stochastic
    depth) comes from the ``generator`` given, not torch's global stream, so results do not depend on the
    threads' timing. The caller must not change ViCLIP's weights or modes until the result is taken.
    The thread starts with the first ``submit`` and ends with ``close`` (a later ``submit`` starts another).
    """

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    def submit(
        self,
        viclip: ViCLIP,
        clips: Tensor,
        precision: str,
        device: torch.device,
        generator: torch.Generator,
    ) -> Future[Tensor]:
        """Start ``viclip.video_features(clips)`` in float32 (grad mode and autocast are per thread, so both
        are set here); ``.result()`` gives u."""

        def work() -> Tensor:
            with torch.no_grad(), precision_autocast(precision, device):
                return viclip.video_features(clips, generator).float()

        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="video-features")
        return self._pool.submit(work)

    @property
    def running(self) -> bool:
        return self._pool is not None

    def close(self) -> None:
        """Finish pending work and end the thread (a process that trains several runs keeps no idle ones)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def native_cpu_bf16() -> bool:
    """Whether this CPU has bf16 matmul instructions (AVX512-BF16 or AMX); without them bf16 autocast is
    emulated and slower than float32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private torch.cpu helpers
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def is_au_step(seed: int, step: int, probability: float) -> bool:
    """The seeded Bernoulli draw deciding whether ``step`` updates ViCLIP (same on every rank)."""
    if probability >= 1.0:
        return True
    if probability <= 0.0:
        return False
    return bool(step_rng(seed, STREAM_AU_STEP, step).random() < probability)


class MirrorTrainer:
    """Builds data, model and optimizers from a :class:`TrainConfig` and runs (or resumes) training."""

    def __init__(self, config: TrainConfig, dist: DistInfo, resume: Path | None = None) -> None:
        self.config = config
        self.dist = dist
        self.device = dist.device
        self.start_step = 0
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        if config.precision == "bf16" and self.device.type == "cpu" and not native_cpu_bf16():
            log.warning("precision bf16 on a CPU without bf16 instructions: expect it slower than fp32")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        if self.device.type == "cuda":
            tf32 = config.precision == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        self.run_dir, resume_checkpoint = self._resolve_run_dir(resume)

        # ---------------------------------------------------------------- data
        d = config.data
        entries = scan_episodes(d.root, d.tasks, d.instruction_index)
        self.train_entries, self.held_out = split_episodes(entries, d.holdout_fraction)
        vocabulary = sorted({e.instruction for e in entries})
        model_config = config.model_config(vocabulary)
        self.train_transitions = [
            t
            for e in self.train_entries
            for t in form_transitions(e, d.sampling, d.demo_augmentation_every_n)
        ]
        eval_entries = self.held_out or self.train_entries
        self.eval_split = "held_out" if self.held_out else "train"
        if not self.held_out:
            log.warning(
                "no held-out episodes (holdout_fraction=%s): evaluating on training episodes",
                d.holdout_fraction,
            )
        self.eval_transitions = [t for e in eval_entries for t in form_transitions(e, "keyframes")]
        self.store = EpisodeStore(model_config.arp, model_config.camera_for_video, cache=d.cache)
        if d.cache:
            started = time.perf_counter()
            self.store.preload(self.train_transitions, self.train_entries)
            log.info(
                "decoded %d EE transitions and %d videos in %.1f s",
                len(self.train_transitions),
                len(self.train_entries),
                time.perf_counter() - started,
            )
        self.builder = PairedBatchBuilder(
            self.train_entries,
            self.train_transitions,
            self.store,
            config.alignment.pairing,
            config.batch_size,
            model_config.clip_frames,
            config.seed,
            d.augment,
        )
        self.eval_entries = eval_entries
        self.eval_batch = build_eval_batch(
            eval_entries,
            self.eval_transitions,
            self.store,
            config.alignment.pairing,
            config.eval_pairs,
            model_config.clip_frames,
            config.seed,
        )
        self.builder.build(0, dist.rank)  # surface data errors (cameras, image sizes) before training starts

        # --------------------------------------------------------------- model
        torch.manual_seed(config.seed)
        self.model = MirrorModel(model_config).to(self.device)
        if config.viclip_weights:
            self._load_official_viclip(Path(config.viclip_weights))
        if config.init:
            self._load_init_weights(Path(config.init))
        if config.viclip_temperature > 0:
            self.model.viclip.set_temperature(config.viclip_temperature)
        if config.probe:
            self._prepare_probe()
        self.optimizers = build_optimizers(self.model, config, dist.world_size)
        self.video_thread = VideoFeatureThread()
        # The vocabulary is fixed for the run: tokenise it once for au_negatives=vocabulary.
        self._vocabulary = list(self.model.config.instructions)
        self._vocabulary_ids = self.model.tokenizer(
            self._vocabulary, context_length=self.model.config.viclip.context_length
        ).to(self.device)
        if resume_checkpoint is not None:
            self._restore(resume_checkpoint)
        self._wrap_distributed()

        self.writer = None
        self.metrics_path = self.run_dir / "metrics.jsonl"
        if dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.run_dir / "train_config.json", config.to_dict())
            write_json(self.run_dir / ckpt.SPLIT_NAME, split_summary(self.train_entries, self.held_out))
            if resume_checkpoint is not None:
                self._truncate_metrics(self.start_step)
            from torch.utils.tensorboard import SummaryWriter  # imported lazily: pulls in tensorboard

            self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.start_step or None)

    # -------------------------------------------------------------------------------- set-up helpers
    def _truncate_metrics(self, start_step: int) -> None:
        """Drop metric lines of steps after the resumed checkpoint (logged before an interruption), so
        ``metrics.jsonl`` reads as one uninterrupted run."""
        if not self.metrics_path.is_file():
            return
        lines = self.metrics_path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line).get("step", -1) < start_step]
        text = "".join(line + "\n" for line in kept)
        atomic_write(self.metrics_path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    def _resolve_run_dir(self, resume: Path | None) -> tuple[Path, Path | None]:
        out = Path(self.config.out)
        if resume is None:
            has_checkpoints = (out / ckpt.CHECKPOINTS_DIR).is_dir() and any(
                (out / ckpt.CHECKPOINTS_DIR).iterdir()
            )
            if has_checkpoints or (out / "metrics.jsonl").exists():
                raise TrainConfigError(
                    f"{out} already holds a training run; pass --resume {out} or choose another --out"
                )
            return out, None
        checkpoint = ckpt.latest_checkpoint(resume)
        run_dir = ckpt.run_dir_of(checkpoint)
        state = ckpt.load_trainer_state(checkpoint)
        differences = ckpt.config_differences(state["train_config"], self.config.to_dict())
        if differences:
            raise CheckpointError(
                f"cannot resume from {checkpoint}: it was trained with different settings for {differences}; "
                "nothing was written"
            )
        if int(state["world_size"]) != self.dist.world_size:
            raise CheckpointError(
                f"cannot resume from {checkpoint}: it ran on {state['world_size']} process(es), this run has "
                f"{self.dist.world_size} (the per-sample learning rate and data streams depend on it)"
            )
        if state["train_config"].get("steps") != self.config.steps:
            log.warning(
                "resuming with steps=%d instead of %s: the cosine schedule is stretched",
                self.config.steps,
                state["train_config"].get("steps"),
            )
        return run_dir, checkpoint

    def _load_official_viclip(self, path: Path) -> None:
        source = load_official_checkpoint(path, self.model.config.viclip, resize_positions=True)
        self.model.viclip.load_state_dict(source.state_dict(), strict=True)
        log.info("loaded official ViCLIP weights from %s", path)

    def _load_init_weights(self, directory: Path) -> None:
        source = MirrorModel.from_pretrained(directory)
        prefixes = self.config.init_parts
        ours, theirs = self.model.config.to_dict(), source.config.to_dict()
        for shaped in ("arp", "alignment"):  # only the fields that shape the weights must agree
            ours[shaped], theirs[shaped] = (
                getattr(c, shaped).model_dict() for c in (self.model.config, source.config)
            )
        for switch in IDENTITY_AT_START_FIELDS:  # a module the source lacks starts as the identity here
            theirs["arp"][switch] = theirs["arp"][switch] or ours["arp"][switch]
        for part in sorted({p.split(".")[0] for p in prefixes}):
            if ours[part] != theirs[part]:  # training-only fields (ARP's augmentation, the loss's) may differ
                raise CheckpointError(f"--init {directory}: its {part} config differs from this run's")

        def under(key: str, prefix: str) -> bool:
            return key == prefix or key.startswith(prefix + ".")

        taken = {k: v for k, v in source.state_dict().items() if any(under(k, p) for p in prefixes)}
        unmatched = [p for p in prefixes if not any(under(k, p) for k in taken)]
        if unmatched:
            raise CheckpointError(f"--init {directory}: init_parts {unmatched} name no weights of the model")
        self.model.load_state_dict(taken, strict=False)
        log.info("initialised %s from %s", ", ".join(prefixes), directory)

    def _prepare_probe(self) -> None:
        if not self.config.init:
            log.warning("probing randomly initialised encoders (no --init checkpoint given)")
        for part in (self.model.viclip, self.model.arp):
            part.requires_grad_(False)
        generator_state = torch.get_rng_state()
        torch.manual_seed(self.config.seed + 1)
        for head in (self.model.alignment.t_u, self.model.alignment.t_e):
            head.reset_parameters()  # probing learns fresh linear maps
        torch.set_rng_state(generator_state)

    def _restore(self, checkpoint: Path) -> None:
        model = MirrorModel.from_pretrained(checkpoint)
        if model.config.to_dict() != self.model.config.to_dict():
            raise CheckpointError(
                f"{checkpoint}: its model config (or instruction vocabulary) differs from this run's"
            )
        self.model.load_state_dict(model.state_dict(), strict=True)
        state = ckpt.load_trainer_state(checkpoint)
        try:
            self.optimizers.load_state_dict(state["optimizers"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(f"{checkpoint}: optimizer state does not fit this run: {exc}") from exc
        if state.get("grad_scaler"):  # an fp16 run's loss scale; other precisions have none to restore
            self.scaler.load_state_dict(state["grad_scaler"])
        ckpt.set_rng_state(state["rng"])
        self.start_step = int(state["step"])
        log.info("resumed from %s at step %d", checkpoint, self.start_step)

    def _wrap_distributed(self) -> None:
        """DDP wrappers (identity in one process). ViCLIP's wrapper is only called on AU steps; on other
        steps its module runs without gradient, which DDP allows."""
        m = self.model
        if not self.dist.distributed:
            self.arp_module, self.viclip_module, self.alignment_module = m.arp, m.viclip, m.alignment
            return
        ids = [self.device.index] if self.device.type == "cuda" else None

        def wrap(module: torch.nn.Module) -> torch.nn.Module:
            return DistributedDataParallel(module, device_ids=ids)

        trains = not self.config.probe
        self.arp_module = wrap(m.arp) if trains else m.arp
        self.viclip_module = wrap(m.viclip) if trains and self.config.au_update_prob > 0 else m.viclip
        self.alignment_module = wrap(m.alignment) if self.config.align_weight > 0 else m.alignment

    # ------------------------------------------------------------------------------------ one step
    def _ee_batch(self, batch: PairedBatch) -> dict[str, Tensor]:
        ee = {k: v.to(self.device, non_blocking=True) for k, v in batch.ee.items()}
        ee["lang"], ee["lang_mask"] = self.model.language_features(batch.ee_instructions)
        return ee

    def _au_texts(self, instructions: list[str]) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """ViCLIP's text arguments for an AU step: (token ids, match ids, text targets); see au_negatives."""
        if self.config.au_negatives == "vocabulary":
            targets = torch.tensor([self._vocabulary.index(s) for s in instructions], device=self.device)
            return self._vocabulary_ids, None, targets
        ids = self.model.tokenizer(instructions, context_length=self.model.config.viclip.context_length)
        return ids.to(self.device), self._instruction_ids(instructions), None

    def _instruction_ids(self, instructions: list[str]) -> Tensor:
        index: dict[str, int] = {}
        return torch.tensor([index.setdefault(s, len(index)) for s in instructions], device=self.device)

    def train_step(self, step: int, batch: PairedBatch) -> dict[str, float]:
        """One optimisation step; returns scalar metrics."""
        c = self.config
        torch.manual_seed(step_seed(c.seed, STREAM_MODEL, step, self.dist.rank))
        au_step = (not c.probe) and is_au_step(c.seed, step, c.au_update_prob)
        rates = self.optimizers.set_step(step, c)
        self.model.train(not c.probe)
        self.model.alignment.train()
        metrics: dict[str, float] = dict(rates)

        ee = self._ee_batch(batch)
        clips = batch.clips.to(self.device, non_blocking=True)
        total = torch.zeros((), device=self.device)
        video_rng = torch.Generator(self.device).manual_seed(
            step_seed(c.seed, STREAM_VIDEO, step, self.dist.rank)
        )
        pending = None
        if not au_step:  # u without gradient, on the second core while ARP runs
            pending = self.video_thread.submit(self.model.viclip, clips, c.precision, self.device, video_rng)
        with precision_autocast(c.precision, self.device):  # the alignment below stays float32
            if c.probe:
                with torch.no_grad():
                    loss_ee, info = self.model.arp(ee)
            else:
                loss_ee, info = self.arp_module(ee)
                total = total + c.ee_weight * loss_ee
            e = info["e"].float()
            if au_step:
                out = self.viclip_module(clips, *self._au_texts(batch.au_instructions), generator=video_rng)
                u = out.video_features.float()
                total = total + out.loss
                metrics["loss/au"] = float(out.loss.detach())
        if pending is not None:
            u = pending.result()
        keys = batch.keys
        if c.gather_negatives:  # the global batch's negatives under DDP (a no-op in one process)
            u, e, keys = gather_batch(self.dist, u, e, keys)
        if c.align_weight > 0:
            if c.probe:
                u, e = u.detach(), e.detach()
            align = self.alignment_module(u, e, keys)
            total = total + c.align_weight * align.loss
        else:
            with torch.no_grad():
                align = self.model.alignment(u.detach(), e.detach(), keys)

        for optimizer in self.optimizers.named().values():
            optimizer.zero_grad(set_to_none=True)
        if total.requires_grad:
            self.scaler.scale(total).backward()  # fp16: scaled so small gradients survive; else as is
        stepping = [self.optimizers.arp, self.optimizers.alignment]
        stepping += [self.optimizers.viclip] if au_step else []
        stepping = [optimizer for optimizer in stepping if optimizer is not None]
        if c.optim.grad_clip_norm > 0:
            for optimizer in stepping:
                self.scaler.unscale_(optimizer)  # clip the true gradients
            for part in (self.model.arp, self.model.viclip, self.model.alignment):
                clip_gradients(part, c.optim.grad_clip_norm)
        for optimizer in stepping:
            self.scaler.step(optimizer)  # fp16: skipped when the scaled gradients overflowed
        self.scaler.update()
        if self.scaler.is_enabled():
            metrics["loss_scale"] = float(self.scaler.get_scale())

        metrics.update({k: float(v) for k, v in info.items() if k.startswith("loss/") and v.dim() == 0})
        metrics["loss/ee"] = float(loss_ee.detach())
        del metrics["loss/total"]
        metrics["rotation_accuracy"] = float(info["rotation_accuracy"])
        metrics["loss/align"] = float(align.loss.detach())
        metrics["alignment/mi_lower_bound"] = float(
            mutual_information_lower_bound(float(align.loss.detach()), len(keys))
        )
        recall = alignment_recall_at_1(align.z_u.detach(), align.z_e.detach(), keys)
        metrics["alignment/train_recall_at_1"] = recall.mean
        metrics["loss/total"] = float(total.detach())
        metrics["au_step"] = float(au_step)
        if not all(math.isfinite(v) for v in metrics.values()):
            bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
            raise FloatingPointError(f"non-finite training metrics at step {step}: {bad}")
        return metrics

    # ------------------------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out metrics: EE loss / position error / gripper accuracy, AU recognition top-1 over the
        vocabulary, alignment loss and bidirectional Recall@1 (paper Sec. 2.2)."""
        m = self.model
        was_training = m.training
        m.eval()
        try:
            batch = self.eval_batch
            ee = self._ee_batch(batch)
            loss_ee, info = m.arp(ee)
            actions, _ = m.arp.predict_action(ee)
            target = ee["action"]
            u = m.viclip.video_features(batch.clips.to(self.device))
            align = m.alignment(u, info["e"], batch.keys)
            recall = alignment_recall_at_1(align.z_u, align.z_e, batch.keys)
            recognizer = InstructionRecognizer(m.viclip, m.tokenizer, m.config.instructions)
            video = F.normalize(u, dim=-1)
            predicted = (video @ recognizer.text_embeds.t()).argmax(dim=1).tolist()
            truth = [m.config.instructions.index(s) for s in batch.au_instructions]
            ids = m.tokenizer(batch.au_instructions, context_length=m.config.viclip.context_length)
            au = m.viclip(
                batch.clips.to(self.device), ids.to(self.device), self._instruction_ids(batch.au_instructions)
            )
            return {
                f"{self.eval_split}/loss_ee": float(loss_ee),
                f"{self.eval_split}/loss_au": float(au.loss),
                f"{self.eval_split}/position_error_m": float(
                    (actions[:, :3] - target[:, :3]).norm(dim=1).mean()
                ),
                f"{self.eval_split}/gripper_accuracy": float(
                    ((actions[:, 7] > 0.5) == (target[:, 7] > 0.5)).float().mean()
                ),
                f"{self.eval_split}/recognition_top1": float(
                    np.mean([p == t for p, t in zip(predicted, truth)])
                ),
                f"{self.eval_split}/loss_align": float(align.loss),
                f"{self.eval_split}/alignment_recall_at_1": recall.mean,
                f"{self.eval_split}/alignment_recall_u_to_e": recall.u_to_e,
                f"{self.eval_split}/alignment_recall_e_to_u": recall.e_to_u,
            }
        finally:
            m.train(was_training)

    # ------------------------------------------------------------------------------------- the loop
    @property
    def stop_step(self) -> int:
        """Where this invocation ends: ``steps``, or earlier with ``stop_after``."""
        c = self.config
        return min(c.steps, c.stop_after) if c.stop_after > 0 else c.steps

    def _batches(self):
        c = self.config
        if c.data.num_workers == 0:
            for step in range(self.start_step, self.stop_step):
                yield self.builder.build(step, self.dist.rank)
            return
        loader = torch.utils.data.DataLoader(
            StepBatches(self.builder, self.start_step, self.stop_step, self.dist.rank),
            batch_size=None,
            shuffle=False,
            num_workers=c.data.num_workers,
            collate_fn=identity_collate,
            pin_memory=self.device.type == "cuda",
        )
        yield from loader

    def _log(self, step: int, metrics: dict[str, float]) -> None:
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, step)
        if self.dist.is_main:
            with open(self.metrics_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"step": step, **metrics}, sort_keys=True) + "\n")

    def _trainer_state(self, next_step: int) -> dict[str, Any]:
        return {
            "step": next_step,
            "optimizers": self.optimizers.state_dict(),
            "grad_scaler": self.scaler.state_dict(),  # empty unless fp16
            "rng": ckpt.rng_state(),
            "train_config": self.config.to_dict(),
            "world_size": self.dist.world_size,
        }

    def save(self, next_step: int) -> Path | None:
        """Checkpoint after ``next_step`` steps (rank 0 writes; all ranks wait)."""
        path = None
        if self.dist.is_main:
            extra = {"step": next_step, "train_config": self.config.to_dict(), "eval_split": self.eval_split}
            path = ckpt.save_checkpoint(
                self.run_dir,
                next_step,
                self.model,
                self._trainer_state(next_step),
                extra,
                self.config.keep_checkpoints,
            )
        barrier(self.dist)
        return path

    def run(self) -> dict[str, float]:
        """Train from ``start_step`` to ``steps``; returns the last evaluation's metrics."""
        from tqdm import tqdm

        c = self.config
        bar = tqdm(
            total=c.steps,
            initial=self.start_step,
            disable=not (c.progress and self.dist.is_main),
            desc="train_joint",
            dynamic_ncols=True,
        )
        window: dict[str, list[float]] = defaultdict(list)
        busy = 0.0  # seconds spent loading batches and training in the current logging window
        au_count = 0
        last_eval: dict[str, float] = {}
        step = self.start_step
        if self.start_step >= self.stop_step:
            log.warning("nothing to do: %d steps already done (stop at %d)", self.start_step, self.stop_step)
        tick = time.perf_counter()
        for step, batch in enumerate(self._batches(), start=self.start_step):
            metrics = self.train_step(step, batch)
            busy += time.perf_counter() - tick
            au_count += int(metrics["au_step"])
            for key, value in metrics.items():
                window[key].append(value)
            done = step + 1
            bar.update(1)
            if done % c.log_every == 0 or done == self.stop_step:
                elapsed = max(busy, 1e-9)
                count = len(window["loss/total"])
                averaged = {k: float(np.mean(v)) for k, v in window.items()}
                total_batch = c.batch_size * self.dist.world_size
                averaged["throughput/ee_samples_per_s"] = count * total_batch / elapsed
                averaged["throughput/au_samples_per_s"] = au_count * total_batch / elapsed
                averaged["throughput/steps_per_s"] = count / elapsed
                self._log(step, averaged)
                bar.set_postfix(
                    loss=f"{averaged['loss/total']:.3f}",
                    ee=f"{averaged['loss/ee']:.3f}",
                    align=f"{averaged['loss/align']:.3f}",
                )
                window.clear()
                au_count = 0
                busy = 0.0
            if self.dist.is_main and (done % c.eval_every == 0 or done == c.steps):
                last_eval = self.evaluate()
                self._log(step, last_eval)
                log.info("step %d: %s", done, ", ".join(f"{k}={v:.4f}" for k, v in last_eval.items()))
            if done % c.checkpoint_every == 0 or done == self.stop_step:
                self.save(done)
            tick = time.perf_counter()
        bar.close()
        self.video_thread.close()
        if self.dist.is_main and step + 1 >= c.steps:
            self.model.save_pretrained(
                self.run_dir / ckpt.FINAL_DIR, extra={"step": c.steps, "train_config": c.to_dict()}
            )
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
        barrier(self.dist)
        return last_eval
