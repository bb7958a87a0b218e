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

    A parameter group with ``adapt=False`` takes plain Adam steps (no trust ratio), as BERT's LAMB does for
    biases and norms ("exclude from layer adaptation"): a tensor that starts at zero gets trust 1 on its
    first step (a warm-up step, so a tiny one) and from then on ``||w|| / ||update||``, which lets it grow
    by at most a factor ``1 + lr`` per step; in practice it stays at zero.
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
            "adapt": True,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Tensor | None:  # noqa: D102 - Optimizer API
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict[str, Any]) -> None:
        """Update every parameter of ``group`` that has a gradient with multi-tensor (``_foreach``) ops:
        ARP has ~200 small tensors, and a Python loop of a dozen ops per tensor cost more than the
        arithmetic. Per tensor the ops are those of the textbook form: ``u = m / (sqrt(v) + eps) + wd * w``,
        ``w -= lr * trust * u``."""
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        if any(g.is_sparse for g in grads):
            raise RuntimeError("Lamb does not support sparse gradients")
        for param in params:
            state = self.state[param]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        states = [self.state[p] for p in params]
        steps = [s["step"] for s in states]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        beta1, beta2 = group["betas"]
        torch._foreach_add_(steps, 1.0)
        torch._foreach_mul_(exp_avgs, beta1)
        torch._foreach_add_(exp_avgs, grads, alpha=1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
        if group["bias_correction"]:
            counts = [float(t) for t in steps]
            m_hat = torch._foreach_div(exp_avgs, [1.0 - beta1**t for t in counts])
            v_hat = torch._foreach_div(exp_avg_sqs, [1.0 - beta2**t for t in counts])
        else:
            m_hat, v_hat = exp_avgs, exp_avg_sqs
        denominators = torch._foreach_sqrt(v_hat)
        torch._foreach_add_(denominators, group["eps"])
        updates = torch._foreach_div(m_hat, denominators)
        if group["weight_decay"] != 0.0:
            torch._foreach_add_(updates, params, alpha=group["weight_decay"])
        if group["adapt"]:
            weight_norms = torch.stack(torch._foreach_norm(params)).clamp(0.0, MAX_WEIGHT_NORM)
            update_norms = torch.stack(torch._foreach_norm(updates))
            trust = torch.where(
                (weight_norms > 0) & (update_norms > 0),
                weight_norms / update_norms,
                torch.ones_like(weight_norms),
            )
            torch._foreach_mul_(updates, trust.tolist())  # one host transfer per group, not per tensor
        torch._foreach_add_(params, updates, alpha=-group["lr"])
