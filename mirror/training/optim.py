"""The three optimizers of joint training and their learning-rate schedule.

* ViCLIP: AdamW with two groups, video tower (+ temperature) at ``video_lr`` and text tower at
  ``video_lr * text_lr_ratio`` (paper Sec. 4.1: text lr is 5% of video lr). Steps only on AU steps.
* ARP: LAMB at ``arp_lr_per_sample * total batch`` (ARP's per-sample rule).
* Alignment heads T_u / T_e: AdamW at ``align_lr`` (paper: 1e-4).

Every group follows the same schedule: linear warm-up from 0 over ``warmup_steps``, then a cosine from the
base rate down to ``min_lr_ratio`` x base at the last step (ARP: to 1/100). The rate is a pure function of
the global step, so resuming needs no scheduler state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.optim import AdamW, Optimizer

from mirror.model import MirrorModel
from mirror.training.config import OptimConfig, TrainConfig
from mirror.training.lamb import Lamb


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    """Multiplier of the base rate used for optimizer step ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class MirrorOptimizers:
    """The optimizers of one run; ``None`` for a model part that does not train (probing, weight 0)."""

    viclip: Optimizer | None
    arp: Optimizer | None
    alignment: Optimizer | None

    def named(self) -> dict[str, Optimizer]:
        return {
            k: v for k, v in (("viclip", self.viclip), ("arp", self.arp), ("alignment", self.alignment)) if v
        }

    def set_step(self, step: int, config: TrainConfig) -> dict[str, float]:
        """Set every group's rate for ``step``; returns ``{group name: lr}`` for logging."""
        o = config.optim
        factor = lr_factor(step, config.steps, o.warmup_steps, o.min_lr_ratio)
        rates = {}
        for optimizer in self.named().values():
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
                rates[group["name"]] = group["lr"]
        return rates

    def state_dict(self) -> dict[str, dict]:
        return {name: opt.state_dict() for name, opt in self.named().items()}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        mine, theirs = set(self.named()), set(state)
        if mine != theirs:
            raise ValueError(
                f"optimizer sets differ: checkpoint has {sorted(theirs)}, this run {sorted(mine)}"
            )
        for name, opt in self.named().items():
            opt.load_state_dict(state[name])


def split_weight_decay(named: list[tuple[str, torch.nn.Parameter]]) -> tuple[list, list]:
    """(decayed, not decayed) trainable parameters: CLIP-style, biases, norms, embeddings and the temperature
    are not decayed (decaying a LayerNorm gain or the logit temperature towards 0 only hurts)."""
    decay, no_decay = [], []
    for name, param in named:
        if not param.requires_grad:
            continue
        exempt = param.ndim < 2 or "embedding" in name or name == "temp"
        (no_decay if exempt else decay).append(param)
    return decay, no_decay


def fused_adamw_supported(params: list[torch.nn.Parameter]) -> bool:
    """Whether torch's fused AdamW kernel can step these parameters (CPU and CUDA floating tensors).

    Why fused: one pass over each tensor instead of a dozen temporaries; for ViCLIP's 49408-row token
    embedding the unfused step allocated and touched ~25 MB per temporary and cost ~0.1 s per AU step on CPU.
    """
    return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)


def build_viclip_optimizer(viclip: torch.nn.Module, o: OptimConfig) -> AdamW:
    """AdamW of ViCLIP: the video tower (and temperature) at ``video_lr``, the text tower at ``video_lr *
    text_lr_ratio``; groups carry ``base_lr`` and ``name`` for :meth:`MirrorOptimizers.set_step`."""
    video = [(n, p) for n, p in viclip.named_parameters() if not n.startswith("text_encoder.")]
    text = list(viclip.text_encoder.named_parameters())
    groups = []
    for params, base_lr, name in (
        (video, o.video_lr, "lr/viclip_video"),
        (text, o.video_lr * o.text_lr_ratio, "lr/viclip_text"),
    ):
        decay, no_decay = split_weight_decay(params)
        groups.append({"params": decay, "base_lr": base_lr, "name": name})
        groups.append({"params": no_decay, "base_lr": base_lr, "name": name, "weight_decay": 0.0})
    groups = [g for g in groups if g["params"]]
    return AdamW(
        groups,
        lr=o.video_lr,
        betas=(o.viclip_betas[0], o.viclip_betas[1]),
        weight_decay=o.viclip_weight_decay,
        fused=fused_adamw_supported([p for g in groups for p in g["params"]]),
    )


def arp_parameter_groups(model: MirrorModel, base_lr: float, layer_adaptation: str) -> list[dict]:
    """LAMB groups of ARP: one with the trust ratio for everything (``all``), or (``weights``) a second,
    without trust ratio or weight decay, for the tensors that start at zero: biases, norm parameters and the
    zero-initialised modulations (``ARPPolicy.identity_at_start_parameters``)."""
    named = list(model.arp.named_parameters())
    if layer_adaptation == "all":
        return [{"params": [p for _, p in named], "base_lr": base_lr, "name": "lr/arp"}]
    starts_at_zero = model.arp.identity_at_start_parameters()
    adapted, exempt = [], []
    for name, param in named:
        (exempt if param.ndim < 2 or name in starts_at_zero else adapted).append(param)
    return [
        {"params": adapted, "base_lr": base_lr, "name": "lr/arp"},
        {"params": exempt, "base_lr": base_lr, "name": "lr/arp", "weight_decay": 0.0, "adapt": False},
    ]


def build_optimizers(model: MirrorModel, config: TrainConfig, world_size: int) -> MirrorOptimizers:
    """Optimizers for the parts that train in this run (see module doc)."""
    o = config.optim
    viclip_opt = arp_opt = align_opt = None
    if not config.probe:
        if config.au_update_prob > 0:
            viclip_opt = build_viclip_optimizer(model.viclip, o)
        arp_lr = o.arp_lr_per_sample * config.batch_size * world_size
        arp_opt = Lamb(
            arp_parameter_groups(model, arp_lr, o.arp_layer_adaptation),
            lr=arp_lr,
            betas=(o.arp_betas[0], o.arp_betas[1]),
            eps=o.arp_eps,
            weight_decay=o.arp_weight_decay,
        )
    if config.align_weight > 0:
        heads = list(model.alignment.parameters())
        align_opt = AdamW(
            [{"params": heads, "base_lr": o.align_lr, "name": "lr/alignment"}],
            lr=o.align_lr,
            weight_decay=o.align_weight_decay,
            fused=fused_adamw_supported(heads),
        )
    return MirrorOptimizers(viclip_opt, arp_opt, align_opt)


def clip_gradients(model: torch.nn.Module, max_norm: float) -> None:
    """Clip the gradient norm of ``model``'s parameters when ``max_norm`` > 0."""
    if max_norm > 0:
        params = [p for p in model.parameters() if p.grad is not None]
        if params:
            torch.nn.utils.clip_grad_norm_(params, max_norm)
