"""Multi-view transformer (MVT, RVT-2 style) over the three virtual views plus language tokens.

Pipeline (research/arp.md section 3) for R x R views and patch size P (T = (R/P)^2 tokens per view):

1. Patchify each view: conv P x P stride P (10 -> C channels) + GroupNorm(4) + LeakyReLU(0.02).
2. Proprio: Linear(proprio_dim -> C) + GroupNorm + LeakyReLU, broadcast to every patch and concatenated,
   so image tokens have width 2C; a learned position embedding (1, 3T, 2C) is added to image tokens only.
3. Language: Linear(lang_dim -> 2C) + GroupNorm + LeakyReLU on each token, prepended to the image tokens.
4. Linear 2C -> attn_dim; ``mvt_view_layers`` pre-LN blocks attend within each view only (language skips
   them), then ``mvt_joint_layers`` blocks attend over language + all image tokens (padded language tokens
   are masked out as keys).
5. Drop the language tokens, Linear attn_dim -> out_dim, and reshape to (B, 3, out_dim, R/P, R/P).

With ``language_film`` the instruction also scales and shifts the image tokens before every layer (see
:class:`LanguageFiLM`), the view layers included.

Attention is :func:`mirror_perception.transformer_layers.attention` (``F.scaled_dot_product_attention`` or
an unfused path where that is faster: dropout, bf16 on CPU); the feed-forward is GEGLU (dim -> 2 * mult *
dim, gate, -> dim).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mirror_perception.transformer_layers import attention, run_block
from mirror_policy.arp.configuration import ARPConfig
from mirror_policy.arp.renderer import NUM_VIEW_CHANNELS, NUM_VIEWS


class MultiHeadSelfAttention(nn.Module):
    """Pre-normalised multi-head self-attention with an optional boolean key mask (True = may attend)."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dim_head, self.dropout = heads, dim_head, dropout
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.out = nn.Linear(heads * dim_head, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, t, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, t, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        y = attention(qkv[0], qkv[1], qkv[2], mask, self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, self.heads * self.dim_head))


class GEGLUFeedForward(nn.Module):
    """Pre-normalised GEGLU MLP: dim -> 2 * mult * dim -> gelu-gated -> dim."""

    def __init__(self, dim: int, mult: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj_in = nn.Linear(dim, 2 * mult * dim)
        self.proj_out = nn.Linear(mult * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj_in(self.norm(x)).chunk(2, dim=-1)
        return self.proj_out(value * F.gelu(gate))


class TransformerLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, ff_mult: int, attn_dropout: float) -> None:
        super().__init__()
        self.attn = MultiHeadSelfAttention(dim, heads, dim_head, attn_dropout)
        self.ff = GEGLUFeedForward(dim, ff_mult)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(x, mask)
        return x + self.ff(x)


class _DenseBlock(nn.Sequential):
    """Linear + GroupNorm(4) + LeakyReLU(0.02), applied to (N, C) rows."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(nn.Linear(in_dim, out_dim), nn.GroupNorm(4, out_dim), nn.LeakyReLU(0.02))


class ZeroInitLinear(nn.Linear):
    """A linear layer that starts (and resets) at zero, so that the block it modulates starts as the identity
    (AdaLN, FiLM). Its own type lets weight init skip it and optimizers find it
    (``ARPPolicy.identity_at_start_parameters``)."""

    def reset_parameters(self) -> None:
        super().reset_parameters()  # draws as nn.Linear does, so seeded streams of later layers stay the same
        nn.init.zeros_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class LanguageFiLM(nn.Module):
    """Per-channel scale and shift of the image tokens before each MVT layer, from the mean language token.

    Without it the instruction reaches the image tokens only through attention in the joint layers, and the
    small ``cpu_tiny`` model learned to ignore words that choose between two alike objects (the left or right
    tap, the chicken or the steak: README, "Which object to act on"). FiLM gives the words a multiplicative
    path into every layer, the per-view ones included. The projection starts at zero, so the module starts
    as the identity and a checkpoint trained without it can be fine-tuned with it.
    """

    def __init__(self, dim: int, layers: int) -> None:
        super().__init__()
        self.layers = layers
        self.proj = ZeroInitLinear(dim, 2 * layers * dim)  # scale 1, shift 0 for every instruction

    def forward(self, lang_tokens: Tensor, lang_mask: Tensor) -> Tensor:
        """(B, L, D) tokens and (B, L) mask -> (B, layers, 2, D): each layer's (scale - 1, shift)."""
        weights = lang_mask.to(lang_tokens.dtype).unsqueeze(-1)
        sentence = (lang_tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.proj(sentence).view(sentence.shape[0], self.layers, 2, -1)

    @staticmethod
    def modulate(tokens: Tensor, film: Tensor) -> Tensor:
        """Modulate (N, T, D) tokens by one layer's (N, 2, D) scale-minus-one and shift."""
        return tokens * (1.0 + film[:, None, 0]) + film[:, None, 1]


class MultiViewTransformer(nn.Module):
    """MVT backbone: (B, 3, 10, R, R) views + proprio + language -> (B, 3, out_dim, R/P, R/P) features."""

    def __init__(self, config: ARPConfig, out_dim: int | None = None) -> None:
        super().__init__()
        c = config
        self.patch = c.img_patch_size
        self.side = c.tokens_per_side
        self.tokens_per_view = self.side**2
        token_dim = 2 * c.mvt_im_channels
        self.out_dim = out_dim or c.embed_dim
        self.patchify = nn.Sequential(
            nn.Conv2d(NUM_VIEW_CHANNELS, c.mvt_im_channels, c.img_patch_size, stride=c.img_patch_size),
            nn.GroupNorm(4, c.mvt_im_channels),
            nn.LeakyReLU(0.02),
        )
        self.proprio = _DenseBlock(c.proprio_dim, c.mvt_im_channels)
        self.lang = _DenseBlock(c.lang_dim, token_dim)
        self.pos_embed = nn.Parameter(torch.randn(1, NUM_VIEWS * self.tokens_per_view, token_dim) * 0.02)
        self.fc_in = nn.Linear(token_dim, c.mvt_attn_dim)

        def layer() -> TransformerLayer:
            return TransformerLayer(
                c.mvt_attn_dim, c.mvt_heads, c.mvt_dim_head, c.mvt_ff_mult, c.mvt_attn_dropout
            )

        self.view_layers = nn.ModuleList(layer() for _ in range(c.mvt_view_layers))
        self.joint_layers = nn.ModuleList(layer() for _ in range(c.mvt_joint_layers))
        self.fc_out = nn.Linear(c.mvt_attn_dim, self.out_dim)
        layers = c.mvt_view_layers + c.mvt_joint_layers
        self.film = LanguageFiLM(c.mvt_attn_dim, layers) if c.language_film else None
        self.checkpoint_activations = c.activation_checkpointing  # see run_block

    def forward(self, images: Tensor, proprio: Tensor, lang: Tensor, lang_mask: Tensor) -> Tensor:
        """
        Args:
            images: (B, 3, 10, R, R) rendered views.
            proprio: (B, proprio_dim) low-dim state.
            lang: (B, L, lang_dim) frozen text-encoder token features.
            lang_mask: (B, L) bool, True for real tokens.
        Returns:
            (B, 3, out_dim, R/P, R/P) per-view feature maps.
        """
        B, V = images.shape[:2]
        T, S = self.tokens_per_view, self.side
        patches = self.patchify(images.flatten(0, 1))  # (B*V, C, S, S)
        prop = self.proprio(proprio).repeat_interleave(V, dim=0)[:, :, None, None].expand(-1, -1, S, S)
        tokens = torch.cat([patches, prop], dim=1).flatten(2).transpose(1, 2)  # (B*V, T, 2C)
        tokens = tokens.reshape(B, V * T, -1) + self.pos_embed

        L = lang.shape[1]
        lang_tokens = self.lang(lang.reshape(B * L, -1)).view(B, L, -1)
        x = self.fc_in(torch.cat([lang_tokens, tokens], dim=1))  # (B, L + V*T, D)

        film = self.film(x[:, :L], lang_mask) if self.film is not None else None
        img = x[:, L:].reshape(B * V, T, -1)
        for i, blk in enumerate(self.view_layers):
            if film is not None:
                img = LanguageFiLM.modulate(img, film[:, i].repeat_interleave(V, dim=0))
            img = run_block(blk, img, checkpoint_activations=self.checkpoint_activations)
        x = torch.cat([x[:, :L], img.reshape(B, V * T, -1)], dim=1)

        key_ok = torch.cat([lang_mask.bool(), lang_mask.new_ones((B, V * T), dtype=torch.bool)], dim=1)
        mask = key_ok[:, None, None, :]
        for i, blk in enumerate(self.joint_layers, start=len(self.view_layers)):
            if film is not None:
                x = torch.cat([x[:, :L], LanguageFiLM.modulate(x[:, L:], film[:, i])], dim=1)
            x = run_block(blk, x, mask, checkpoint_activations=self.checkpoint_activations)

        out = self.fc_out(x[:, L:])  # (B, V*T, out)
        return out.view(B, V, S, S, -1).permute(0, 1, 4, 2, 3).contiguous()
