"""The CLIP pre-LN transformer, with parameter names that match OpenAI CLIP / ViCLIP state dicts.

Sequences are batch-first here (upstream is sequence-first); names do not depend on the layout, so the
official weights load unchanged. Attention (:func:`attention`: `scaled_dot_product_attention`, or an unfused
path where that is faster) runs on the packed q/k/v projection that `nn.MultiheadAttention` stores as
`in_proj_weight` / `in_proj_bias`.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back, as CLIP does, so half-precision runs stay stable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class QuickGELU(nn.Module):
    """CLIP's activation x*sigmoid(1.702x); the official weights were trained with it, not exact GELU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a residual branch for a random subset of samples.

    Upstream (timm on a sequence-first tensor) draws the mask per token position instead of per sample;
    we use the standard per-sample form. It only matters in training and leaves weights compatible.
    """

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``generator``: the random stream of the sample mask (default: torch's global one)."""
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep, generator=generator)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


_DROPOUT_BITS = 15  # resolution of the keep probability: p is rounded to a multiple of 2^-15
_LANES = 4  # 15-bit draws per int64 from random_() (63 random bits)


def dropout_keep_mask(shape: tuple[int, ...], p: float, device: torch.device) -> torch.Tensor:
    """Bool mask, True with probability 1 - p (p rounded to a multiple of 2^-15), from the global generator.

    Why: ``bernoulli_`` draws one double per element and made attention dropout cost more than the attention
    itself on CPU. Here each int64 of ``random_()`` (uniform in [0, 2^63)) is cut into four 15-bit lanes,
    4x cheaper; the rounding of p (< 2e-5) is immaterial.
    """
    count = math.prod(shape)
    words = torch.empty((count + _LANES - 1) // _LANES, dtype=torch.int64, device=device).random_()
    lanes = words.view(torch.int16).bitwise_and_((1 << _DROPOUT_BITS) - 1)[:count]
    return (lanes >= round(p * (1 << _DROPOUT_BITS))).view(shape)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    causal: bool = False,
) -> torch.Tensor:
    """Scaled dot-product attention of (B, H, T, d) tensors; ``mask`` is boolean, True = may attend.

    ``F.scaled_dot_product_attention`` where its fused kernel is the fastest (float32, no dropout), else an
    unfused path: with dropout torch's CPU backend falls back to an unfused path of its own, with a slow
    ``bernoulli_`` mask and a "safe" softmax that scans for fully masked rows, and for bf16 inputs on CPU
    (bf16 autocast) its flash kernel is slower than two bf16 matmuls and a softmax (1.7x in forward + backward
    at ViCLIP cpu_tiny's 257 tokens). The unfused path adds the mask as a bias inside the scores' matmul,
    keeps the (T, T) maps in the matmul dtype (the softmax kernel accumulates in float32 either way; casting
    the maps to float32 and back cost more than the attention), draws the dropout mask with
    :func:`dropout_keep_mask` and applies 1 / (1 - p) to the (T, d) output. Every query must see at least one
    key (true of every mask in ViCLIP and ARP).
    """
    if dropout_p == 0.0 and not (q.device.type == "cpu" and q.dtype == torch.bfloat16):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    *batch, length, dim = q.shape
    keys = k.shape[-2]
    if causal:
        lower = torch.ones(length, keys, dtype=torch.bool, device=q.device).tril()
        mask = lower if mask is None else mask & lower
    q3, k3, v3 = (x.reshape(-1, x.shape[-2], x.shape[-1]) for x in (q, k, v))
    scale = 1.0 / math.sqrt(dim)
    if mask is None:
        scores = torch.bmm(q3 * scale, k3.transpose(1, 2))
    else:  # an additive bias inside the matmul: no masking pass over the maps, nothing to back-propagate
        mask = mask.reshape((1,) * (q.dim() - mask.dim()) + tuple(mask.shape))
        bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, -math.inf)
        bias = bias.expand(*batch, mask.shape[-2], keys).reshape(-1, mask.shape[-2], keys)
        scores = torch.baddbmm(bias, q3, k3.transpose(1, 2), alpha=scale)
    probs = scores.softmax(dim=-1)
    if dropout_p > 0.0:
        keep = dropout_keep_mask(tuple(probs.shape), dropout_p, probs.device).to(probs.dtype)
        probs = probs * keep  # as torch.where(keep, probs, 0); forward + backward in 0.5-0.65x its time
    out = torch.bmm(probs, v3).view(*batch, length, v.shape[-1])
    return out * (1.0 / (1.0 - dropout_p)) if dropout_p > 0.0 else out


class MultiheadSelfAttention(nn.Module):
    """Self-attention with the parameter layout of `nn.MultiheadAttention` (q, k, v packed in that order)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)  # nn.MultiheadAttention's default; CLIP init overrides

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = attention(qkv[0], qkv[1], qkv[2], causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, width))


def run_block(
    block: nn.Module,
    *args: object,
    checkpoint_activations: bool = False,
    generator: torch.Generator | None = None,
    **kwargs: object,
) -> torch.Tensor:
    """``block(*args, **kwargs)`` (and ``generator=`` when one is given), optionally under activation
    checkpointing: with ``checkpoint_activations`` and gradients on, the block keeps only its inputs in the
    forward pass and recomputes its activations in backward, trading one more forward pass for the memory
    of every intermediate (what lets the paper's batch fit a GPU).

    The recomputation draws the same random numbers as the forward pass, so gradients equal those without
    checkpointing: ``torch.utils.checkpoint`` restores torch's global streams (dropout), and an explicit
    ``generator`` (ViCLIP's stochastic depth) is replayed here from its state at the block's start.
    """
    if generator is not None:
        kwargs["generator"] = generator
    if not (checkpoint_activations and torch.is_grad_enabled()):
        return block(*args, **kwargs)
    if generator is None:
        return checkpoint(block, *args, use_reentrant=False, **kwargs)
    start = generator.get_state()
    after_forward: list[torch.Tensor] = []

    def replay(*inputs: object) -> torch.Tensor:
        stream = torch.Generator(device=generator.device)
        stream.set_state(start)
        out = block(*inputs, **{**kwargs, "generator": stream})
        after_forward.append(stream.get_state())
        return out

    out = checkpoint(replay, *args, use_reentrant=False)
    generator.set_state(after_forward[0])  # the caller's stream moves on as without checkpointing
    return out


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x)), each branch under stochastic depth."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4, drop_path: float = 0.0) -> None:
        super().__init__()
        self.attn = MultiheadSelfAttention(width, heads)
        self.ln_1 = LayerNorm(width, eps=1e-5)
        hidden = width * mlp_ratio
        self.mlp = nn.Sequential(
            OrderedDict(
                c_fc=nn.Linear(width, hidden),
                gelu=QuickGELU(),
                c_proj=nn.Linear(hidden, width),
            )
        )
        self.ln_2 = LayerNorm(width, eps=1e-5)
        self.drop_path = DropPath(drop_path)

    def forward(
        self, x: torch.Tensor, causal: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.ln_1(x), causal=causal), generator)
        return x + self.drop_path(self.mlp(self.ln_2(x)), generator)


class Transformer(nn.Module):
    """A stack of residual attention blocks; `drop_path_rate` rises linearly from 0 over depth."""

    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        mlp_ratio: int = 4,
        drop_path_rate: float = 0.0,
        checkpoint_activations: bool = False,
    ) -> None:
        super().__init__()
        rates = [drop_path_rate * i / max(layers - 1, 1) for i in range(layers)]
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_ratio, r) for r in rates)
        self.checkpoint_activations = checkpoint_activations  # see run_block

    def forward(
        self, x: torch.Tensor, causal: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``generator``: the random stream of stochastic depth (default: torch's global one)."""
        for block in self.resblocks:
            x = run_block(
                block,
                x,
                causal=causal,
                generator=generator,
                checkpoint_activations=self.checkpoint_activations,
            )
        return x

    @torch.no_grad()
    def init_clip_weights(self) -> None:
        """OpenAI CLIP's initialisation: scaled normals for projections, zero biases, unit LayerNorms."""
        width = self.resblocks[0].ln_1.normalized_shape[0]
        attn_std = width**-0.5
        proj_std = attn_std * (2 * len(self.resblocks)) ** -0.5
        fc_std = (2 * width) ** -0.5
        for block in self.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.zeros_(block.attn.in_proj_bias)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.zeros_(block.attn.out_proj.bias)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.zeros_(block.mlp.c_fc.bias)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
            nn.init.zeros_(block.mlp.c_proj.bias)
            for norm in (block.ln_1, block.ln_2):
                nn.init.ones_(norm.weight)
                nn.init.zeros_(norm.bias)


def clip_init_scale(width: int) -> float:
    """Std of CLIP's embedding tables and output projections for a tower of this width."""
    return 1.0 / math.sqrt(width)
