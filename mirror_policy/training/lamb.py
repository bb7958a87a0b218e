"""LAMB (You et al., 2020, "Large Batch Optimization for Deep Learning") as ARP trains with it.

Adam moments, decoupled weight decay added to the Adam direction, then a per-tensor trust ratio
``clamp(||w||, 0, 10) / ||update||`` scales the step, so every layer moves by a similar *relative* amount
whatever its gradient scale; that is what lets ARP use one large learning rate (1.25e-5 per sample x 192).
ARP's settings (research/arp.md section 6): betas (0.9, 0.999), eps 1e-6, weight decay 1e-4, no bias
correction, no gradient clipping. torch has no LAMB, so here is one written from the paper.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

MAX_WEIGHT_NORM = 10.0


class Lamb(Optimizer):
    """Layer-wise adaptive moments optimizer.

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        betas: Adam's moment decay rates.
        eps: added to the second-moment root.
        weight_decay: decoupled L2 factor added to the update before the trust ratio.
        bias_correction: divide the moments by (1 - beta^t) as Adam does (ARP: off).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        bias_correction: bool = False,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"invalid learning rate {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas}")
        if eps <= 0.0 or weight_decay < 0.0:
            raise ValueError(f"invalid eps {eps} or weight_decay {weight_decay}")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "bias_correction": bias_correction,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Tensor | None:  # noqa: D102 - Optimizer API
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if grad.is_sparse:
                    raise RuntimeError("Lamb does not support sparse gradients")
                state = self.state[param]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] += 1
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                if group["bias_correction"]:
                    t = float(state["step"])
                    m_hat = exp_avg / (1.0 - beta1**t)
                    v_hat = exp_avg_sq / (1.0 - beta2**t)
                else:
                    m_hat, v_hat = exp_avg, exp_avg_sq
                update = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"] != 0.0:
                    update = update.add(param, alpha=group["weight_decay"])
                weight_norm = param.norm().clamp(0.0, MAX_WEIGHT_NORM)
                update_norm = update.norm()
                trust = torch.where(
                    (weight_norm > 0) & (update_norm > 0),
                    weight_norm / update_norm,
                    torch.ones_like(weight_norm),
                )
                param.add_(update * trust, alpha=-group["lr"])
        return loss
