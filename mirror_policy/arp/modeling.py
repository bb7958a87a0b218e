"""ARP: autoregressive keyframe policy = virtual views -> MVT -> chunking causal transformer (CCT).

One keyframe action is predicted as a sequence of tokens (research/arp.md sections 1, 4, 5):

1. **Coarse position.** Render the cropped point cloud into 3 orthographic views of the scene cube; MVT #1.
   Three ``stage1`` query tokens, one per view, form one chunk predicted in parallel: they run through the
   CCT's *cross* blocks (AdaLN blocks whose conditioning comes from cross-attention, each query to its own
   view's MVT tokens only) and attend to each other; a convex-upsampling head turns query x feature map
   into an R x R heatmap per view. The 3D point is the anchor whose projections score best
   (``renderer.lift_heatmaps``). ARP runs each view's query as its own length-1 sequence, where the
   self-attention has a single key and its query/key weights never receive gradient; the joint chunk
   keeps every weight alive and lets the views agree.
2. **Fine position (zoom).** Re-render a cube ``zoom_factor`` times smaller around the coarse point; MVT #2
   (separate weights) and the ``stage2`` queries (shared cross blocks, own type embedding and head); lift
   again. In training the zoom centre is the true point plus noise (teacher forcing).
3. **Rotation, gripper, collision.** A 6-token prompt (MVT #2 features sampled at the fine point in each view,
   plus each view's global max-pool) is followed by the tokens rot-x -> rot-y -> rot-z (chunks of 1) and
   [gripper_open, ignore_collisions] (one chunk of 2, the Mirror supplement's "chunk size 2 for binary
   gripper states"), run through the causal *self* blocks. The gripper chunk may not attend to the rotation
   tokens (ARP's ``block_attn_directions``), so it depends on the prompt only.

Teacher forcing uses two streams in one attention pass: x* (token value + position embedding; a token sees
x* tokens of its own and earlier chunks) and x-hat queries (type + chunk-position + position embedding; a
query sees x* of strictly earlier chunks and the queries of its own chunk). Decoding runs the identical
masks one chunk at a time, so decoding and teacher forcing give the same query outputs for the same tokens.

The loss is the unweighted sum of 7 terms: two soft-target cross-entropies over the heatmaps (averaged over
views), three 72-way rotation cross-entropies, gripper and collision cross-entropies.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mirror_perception.transformer_layers import attention, run_block
from mirror_policy.arp.action_tokens import action_to_labels, labels_to_action
from mirror_policy.arp.configuration import ARPConfig
from mirror_policy.arp.mvt import MultiViewTransformer, ZeroInitLinear
from mirror_policy.arp.preprocessing import validate_batch
from mirror_policy.arp.renderer import (
    NUM_VIEWS,
    CubeFrame,
    VirtualViewRenderer,
    cube_to_view,
    gaussian_heatmaps,
    in_bounds_mask,
    lift_heatmaps,
    lift_with_coarse_prior,
    plane_to_pixel,
)

# --------------------------------------------------------------------------- the token sequence
TOKEN_TYPES: tuple[str, ...] = ("prompt", "stage1", "stage2", "rot_x", "rot_y", "rot_z", "grip", "collision")
PROMPT_LEN = 2 * NUM_VIEWS
ACTION_TOKENS: tuple[str, ...] = ("rot_x", "rot_y", "rot_z", "grip", "collision")
# Sequence slots (ARP's max_seq_len 17): 0-2 stage-1 view queries, 3-5 stage-2 view queries, 6-11 prompt,
# 12-14 rot-x/y/z, 15-16 gripper_open / ignore_collisions. The point chunks run on their own (cross blocks);
# chunk ids below order the action sequence that runs through the self blocks.
POINT_SLOTS: tuple[tuple[int, ...], ...] = ((0, 1, 2), (3, 4, 5))
PROMPT_START = 6
ROTATION_SLOTS: tuple[int, ...] = (12, 13, 14)
GRIPPER_SLOTS: tuple[int, ...] = (15, 16)
ACTION_SLOTS: tuple[int, ...] = ROTATION_SLOTS + GRIPPER_SLOTS
SLOT_TYPE: tuple[int, ...] = (1, 1, 1, 2, 2, 2) + (0,) * PROMPT_LEN + (3, 4, 5, 6, 7)
SLOT_CHUNK_POS: tuple[int, ...] = (0, 1, 2, 0, 1, 2) + (0,) * PROMPT_LEN + (0, 0, 0, 0, 1)
SLOT_CHUNK: tuple[int, ...] = (-1,) * 6 + (0,) * PROMPT_LEN + (1, 2, 3, 4, 4)
MAX_SEQ_LEN = len(SLOT_TYPE)
MAX_CHUNK_SIZE = NUM_VIEWS
GRIPPER_CHUNK = 4
ROTATION_CHUNKS: tuple[int, ...] = (1, 2, 3)


def chunk_attention_mask(star_slots: list[int], hat_slots: list[int], device: torch.device) -> Tensor:
    """(Ts + Th, Ts + Th) bool mask, True = may attend, for x* slots followed by x-hat query slots."""
    chunk = torch.tensor(SLOT_CHUNK, device=device)
    cs, ch = chunk[star_slots], chunk[hat_slots]

    def dependency(ci: Tensor, cj: Tensor) -> Tensor:
        blocked = (ci[:, None] == GRIPPER_CHUNK) & torch.isin(
            cj, torch.tensor(ROTATION_CHUNKS, device=device)
        )
        return ~blocked

    star_star = (cs[None, :] <= cs[:, None]) & dependency(cs, cs)
    star_hat = torch.zeros(len(star_slots), len(hat_slots), dtype=torch.bool, device=device)
    hat_star = (cs[None, :] < ch[:, None]) & dependency(ch, cs)
    hat_hat = ch[None, :] == ch[:, None]
    return torch.cat([torch.cat([star_star, star_hat], 1), torch.cat([hat_star, hat_hat], 1)], 0)


def sinusoidal_table(count: int, dim: int) -> Tensor:
    """(count, dim) fixed sinusoidal embeddings of the integers 0..count-1 (base 10000)."""
    pos = torch.arange(count, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    table = torch.zeros(count, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return table


# --------------------------------------------------------------------------- CCT building blocks
class Attention(nn.Module):
    """Multi-head attention of queries ``x`` over ``context`` with an optional boolean mask."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None = None) -> Tensor:
        b, t, d = x.shape
        h = self.heads
        q = self.q(x).view(b, t, h, d // h).transpose(1, 2)
        k, v = self.kv(context).view(b, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        y = attention(q, k, v, mask, self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


def _mlp(dim: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Dropout(dropout), nn.Linear(hidden, dim),
        nn.Dropout(dropout),
    )  # fmt: skip


class CausalSelfBlock(nn.Module):
    """Plain pre-LN transformer block; causality and chunking come from the mask."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.mlp = _mlp(dim, mlp_dim, dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, mask)
        return x + self.mlp(self.norm2(x))


class VisualAdaLNBlock(nn.Module):
    """ARP's "cross" block: cross-attention to one view's visual tokens produces DiT-style AdaLN
    shift / scale / gate (zero-initialised, so every block starts as the identity) for a self-attention
    and an MLP sub-block."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm_query, self.norm_visual, self.norm_cond = (
            nn.LayerNorm(dim),
            nn.LayerNorm(dim),
            nn.LayerNorm(dim),
        )
        self.cross = Attention(dim, heads, dropout)
        self.modulation = nn.Sequential(nn.SiLU(), ZeroInitLinear(dim, 6 * dim))
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = Attention(dim, heads, dropout)
        self.mlp = _mlp(dim, mlp_dim, dropout)

    def forward(
        self, x: Tensor, visual: Tensor, self_mask: Tensor | None = None, cross_mask: Tensor | None = None
    ) -> Tensor:
        cond = self.norm_cond(self.cross(self.norm_query(x), self.norm_visual(visual), cross_mask))
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(cond).chunk(6, dim=-1)
        h = self.norm1(x) * (1 + scale1) + shift1
        x = x + gate1 * self.attn(h, h, self_mask)
        h = self.norm2(x) * (1 + scale2) + shift2
        return x + gate2 * self.mlp(h)


class ConvexUpsampleHeatmapHead(nn.Module):
    """Query (D) x feature map (D, S, S) -> (S*f, S*f) logits by RAFT-style convex upsampling (f = patch).

    A value branch predicts one logit per patch; a mask branch predicts, for each of the f x f sub-pixels,
    softmax weights over the 3 x 3 neighbouring patch logits (scaled by 0.1 as in RAFT / RVT-2). The convs
    follow autocast; the softmax and the convex combination run in float32, so the heatmap logits are float32.
    """

    def __init__(self, dim: int, hidden: int, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.value = nn.Sequential(
            nn.Conv2d(dim, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, 1, 3, padding=1),
        )
        self.mask = nn.Sequential(
            nn.Conv2d(dim, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, 9 * factor**2, 1)
        )

    def forward(self, query: Tensor, features: Tensor) -> Tensor:
        """query (N, D), features (N, D, S, S) -> logits (N, S*f, S*f)."""
        n, _, s, _ = features.shape
        f = self.factor
        x = features * query[:, :, None, None].to(features.dtype)  # bf16 features: no cast before the convs
        value = self.value(x).float()  # (N, 1, S, S)
        weights = (0.1 * self.mask(x).float()).view(n, 9, f, f, s, s).softmax(dim=1)
        neighbours = F.unfold(value, 3, padding=1).view(n, 9, 1, 1, s, s)
        up = (weights * neighbours).sum(dim=1)  # (N, f, f, S, S)
        return up.permute(0, 3, 1, 4, 2).reshape(n, s * f, s * f)


class ChunkingCausalTransformer(nn.Module):
    """ARP's policy network: shared embeddings, ``cross_layers`` visual AdaLN blocks for the position queries,
    ``self_layers`` causal blocks for the action tokens, one final LayerNorm and the token heads."""

    def __init__(self, config: ARPConfig) -> None:
        super().__init__()
        c = config
        d = c.embed_dim
        self.bins = c.rotation_bins
        self.type_embed = nn.Embedding(len(TOKEN_TYPES), d)
        self.pos_embed = nn.Embedding(MAX_SEQ_LEN, d)
        self.chunk_pos_embed = nn.Embedding(MAX_CHUNK_SIZE, d)
        self.register_buffer("rotation_value_table", sinusoidal_table(c.rotation_bins, d), persistent=False)
        self.embed_dropout = nn.Dropout(c.dropout)
        self.cross_blocks = nn.ModuleList(
            VisualAdaLNBlock(d, c.num_heads, c.mlp_dim, c.dropout) for _ in range(c.cross_layers)
        )
        self.self_blocks = nn.ModuleList(
            CausalSelfBlock(d, c.num_heads, c.mlp_dim, c.dropout) for _ in range(c.self_layers)
        )
        self.final_norm = nn.LayerNorm(d)
        self.checkpoint_activations = c.activation_checkpointing  # see run_block
        hidden = max(1, int(round(c.upsample_hidden_mult * d)))
        self.heatmap_heads = nn.ModuleList(
            ConvexUpsampleHeatmapHead(d, hidden, c.img_patch_size) for _ in range(2)
        )
        self.rotation_heads = nn.ModuleList(nn.Linear(d, c.rotation_bins) for _ in range(3))
        self.grip_head = nn.Linear(d, 2)
        self.collision_head = nn.Linear(d, 2)

    # ----------------------------------------------------------------- position queries (cross blocks)
    def point_logits(self, stage: int, features: Tensor) -> Tensor:
        """Heatmap logits (B, V, R, R) of stage 0 (coarse) or 1 (fine) from MVT features (B, V, D, S, S).

        The V view queries form one chunk: query v cross-attends to view v's S*S tokens only, and the
        queries attend to each other in the AdaLN blocks' self-attention.
        """
        B, V, D, S, _ = features.shape
        visual = features.flatten(3).transpose(2, 3).reshape(B, V * S * S, D)
        views = torch.arange(V, device=features.device)
        cross_mask = views[:, None] == views.repeat_interleave(S * S)[None, :]  # (V, V*S*S)
        x = self.embed_dropout(self._query_embeddings(list(POINT_SLOTS[stage]), B, features.device))
        for blk in self.cross_blocks:
            x = run_block(
                blk, x, visual, cross_mask=cross_mask, checkpoint_activations=self.checkpoint_activations
            )
        x = self.final_norm(x)  # (B, V, D)
        logits = self.heatmap_heads[stage](x.reshape(B * V, D), features.flatten(0, 1))
        return logits.view(B, V, *logits.shape[-2:])

    # ----------------------------------------------------------------- action tokens (self blocks)
    @staticmethod
    def prompt_tokens(features: Tensor, plane: Tensor) -> Tensor:
        """(B, 6, D): features bilinearly sampled at each view's (col, row) plane point + each view's max.

        Float32 whatever the autocast dtype of ``features``: these tokens start the x* stream, and the
        sampling point must not be rounded to bf16.
        """
        features = features.float()
        B, V, D = features.shape[:3]
        grid = plane.reshape(B * V, 1, 1, 2).to(features.dtype)
        sampled = F.grid_sample(features.flatten(0, 1), grid, align_corners=False, padding_mode="border")
        return torch.cat([sampled.view(B, V, D), features.amax(dim=(-1, -2))], dim=1)

    def _star_embeddings(self, prompt: Tensor, rotation_bins: Tensor) -> Tensor:
        """x* for the prompt plus the first ``rotation_bins.shape[1]`` rotation tokens (slots 6 .. 11 + k).

        The gripper chunk is the last one, so its tokens are never inputs and need no value embedding.
        """
        values = [prompt]
        if rotation_bins.shape[1] > 0:
            values.append(self.rotation_value_table[rotation_bins])
        x = torch.cat(values, dim=1)
        slots = torch.arange(PROMPT_START, PROMPT_START + x.shape[1], device=x.device)
        return x + self.pos_embed(slots)

    def _query_embeddings(self, slots: list[int], batch: int, device: torch.device) -> Tensor:
        idx = torch.tensor(slots, device=device)
        types = torch.tensor([SLOT_TYPE[s] for s in slots], device=device)
        chunk_pos = torch.tensor([SLOT_CHUNK_POS[s] for s in slots], device=device)
        q = self.type_embed(types) + self.chunk_pos_embed(chunk_pos) + self.pos_embed(idx)
        return q.expand(batch, -1, -1)

    def _run_self(self, star: Tensor, hat_slots: list[int]) -> Tensor:
        """Self blocks over [x*, x-hat]; returns the final-normed x-hat outputs (B, len(hat_slots), D)."""
        B, Ts, _ = star.shape
        mask = chunk_attention_mask(list(range(PROMPT_START, PROMPT_START + Ts)), hat_slots, star.device)
        x = torch.cat([star, self._query_embeddings(hat_slots, B, star.device)], dim=1)
        x = self.embed_dropout(x)
        for blk in self.self_blocks:
            x = run_block(blk, x, mask, checkpoint_activations=self.checkpoint_activations)
        return self.final_norm(x[:, Ts:])

    def action_heads(self, hat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Query outputs (B, 5, D) at slots 12..16 -> rotation (B, 3, bins), grip (B, 2), collision (B, 2)
        logits, float32 also under autocast (they feed the cross-entropies)."""
        rot = torch.stack([head(hat[:, i]) for i, head in enumerate(self.rotation_heads)], dim=1)
        return rot.float(), self.grip_head(hat[:, 3]).float(), self.collision_head(hat[:, 4]).float()

    def teacher_forced(self, prompt: Tensor, rotation_bins_in: Tensor) -> Tensor:
        """All five action queries in one pass, given (possibly noised) true rotation bins. -> (B, 5, D)."""
        star = self._star_embeddings(prompt, rotation_bins_in)
        return self._run_self(star, list(ACTION_SLOTS))

    def decode(self, prompt: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Greedy chunk-by-chunk decoding -> rotation bins (B, 3), grip (B,), collision (B,), queries."""
        B = prompt.shape[0]
        bins = torch.zeros(B, 0, dtype=torch.long, device=prompt.device)
        outputs = []
        for i, slot in enumerate(ROTATION_SLOTS):
            hat = self._run_self(self._star_embeddings(prompt, bins), [slot])
            outputs.append(hat)
            bins = torch.cat([bins, self.rotation_heads[i](hat[:, 0]).argmax(-1, keepdim=True)], dim=1)
        hat = self._run_self(self._star_embeddings(prompt, bins), list(GRIPPER_SLOTS))
        outputs.append(hat)
        grip = self.grip_head(hat[:, 0]).argmax(-1)
        collision = self.collision_head(hat[:, 1]).argmax(-1)
        return bins, grip, collision, torch.cat(outputs, dim=1)


class KeyframePrediction(NamedTuple):
    """One decoded keyframe per batch element (see :meth:`ARPPolicy.predict`)."""

    action: Tensor  # (B, 9) [x, y, z, qx, qy, qz, qw, gripper_open, ignore_collisions]
    e: Tensor  # (B, embed_dim) embodied representation
    coarse_position: Tensor  # (B, 3) the coarse stage's world point, the centre of the fine stage's cube


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Mean over leading dims of -sum(target * log_softmax(logits)) over the last two (pixel) dims, in
    float32 (a bf16 log-softmax over 4096 pixels would lose the loss's small differences)."""
    logp = F.log_softmax(logits.flatten(-2).float(), dim=-1)
    return -(target.flatten(-2) * logp).sum(-1).mean()


# --------------------------------------------------------------------------- the policy
class ARPPolicy(nn.Module):
    """The full ARP policy.

    Batch (``mirror_policy.arp.preprocessing``): ``points`` (B, N, 3) world metres, ``rgb`` (B, N, 3) in
    [0, 1], ``low_dim_state`` (B, proprio_dim), ``lang`` (B, L, lang_dim) frozen text-encoder token features,
    ``lang_mask`` (B, L) bool, and for training ``action`` (B, 9) RLBench keyframe actions.

    **Embodied representation e** (used by the mirror alignment, paper section 3: "the output feature from
    the last block of the policy network (a chunking causal transformer)"): the output of the CCT's *last*
    block (a causal self block), after the final LayerNorm, at the five action-query positions (rot-x,
    rot-y, rot-z, gripper_open, ignore_collisions) of the x-hat stream, mean-pooled to (B, embed_dim).
    Why this tensor: it is exactly what the action heads decode, so aligning it shapes the features that
    choose the action; the x* stream is avoided because it carries the (noised) ground-truth rotation
    inputs. Through the prompt it depends on MVT #2 and on the language. In ``forward`` it keeps its graph
    (the alignment loss back-propagates into the policy); ``predict_action`` returns the same tensor from
    the decoding pass, equal to a teacher-forced pass on the decoded tokens.
    """

    def __init__(self, config: ARPConfig) -> None:
        super().__init__()
        self.config = config
        self.renderer = VirtualViewRenderer(config.img_size, config.splat_radius)
        self.mvt_coarse = MultiViewTransformer(config)
        self.mvt_fine = MultiViewTransformer(config)
        self.cct = ChunkingCausalTransformer(config)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, ZeroInitLinear):  # back to zero; the draw above keeps the seeded stream
                nn.init.zeros_(module.weight)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def identity_at_start_parameters(self) -> set[str]:
        """Names of the parameters that start at zero so that their block starts as the identity (the AdaLN
        modulations, FiLM): an optimizer with a trust ratio must exempt them (``mirror.training.lamb``)."""
        return {
            f"{name}.{param}"
            for name, module in self.named_modules()
            if isinstance(module, ZeroInitLinear)
            for param, _ in module.named_parameters(recurse=False)
        }

    @property
    def embed_dim(self) -> int:
        """Width of the embodied representation e."""
        return self.config.embed_dim

    # ----------------------------------------------------------------- shared steps
    def _views(self, frame: CubeFrame, points: Tensor, rgb: Tensor, keep: Tensor) -> Tensor:
        return self.renderer.render(frame.to_cube(points), rgb, keep).images

    def _stage(
        self, stage: int, frame: CubeFrame, batch: dict[str, Tensor], keep: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Render, encode and predict heatmaps of one position stage -> (features, logits)."""
        images = self._views(frame, batch["points"], batch["rgb"], keep)
        mvt = self.mvt_coarse if stage == 0 else self.mvt_fine
        features = mvt(images, batch["low_dim_state"], batch["lang"], batch["lang_mask"])
        return features, self.cct.point_logits(stage, features)

    def _heatmap_loss(self, logits: Tensor, frame: CubeFrame, target_world: Tensor) -> Tensor:
        pixel, _ = cube_to_view(frame.to_cube(target_world))
        target = gaussian_heatmaps(plane_to_pixel(pixel, self.config.img_size), self.config.img_size,
                                   self.config.heatmap_sigma_px)  # fmt: skip
        return soft_cross_entropy(logits, target)

    def _noisy_rotation_inputs(self, bins: Tensor) -> Tensor:
        c = self.config
        probs = torch.tensor(c.rotation_input_noise_probs, device=bins.device)
        offsets = torch.tensor(c.rotation_input_noise_offsets, device=bins.device)
        pick = torch.multinomial(probs, bins.numel(), replacement=True).view_as(bins)
        return (bins + offsets[pick]) % c.rotation_bins

    # ----------------------------------------------------------------- training
    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Teacher-forced loss. Returns (total loss, info) where info holds the detached per-term losses
        under ``loss/<term>`` and the embodied representation ``e`` (B, embed_dim) with its graph."""
        c = self.config
        validate_batch(batch, c, require_action=True)
        labels = action_to_labels(batch["action"].float(), c.rotation_bins)
        B = labels.position.shape[0]
        keep = in_bounds_mask(batch["points"], c.scene_bounds)
        frame1 = CubeFrame.from_bounds(c.scene_bounds, B, batch["points"].device)
        target = labels.position.float()

        _, logits1 = self._stage(0, frame1, batch, keep)
        loss_stage1 = self._heatmap_loss(logits1, frame1, target)

        center = target
        if self.training and c.stage2_center_noise > 0:
            noise = (torch.rand_like(target) * 2 - 1) * c.stage2_center_noise
            center = target + noise * frame1.half_size
        frame2 = frame1.zoom(center, c.zoom_factor)
        features2, logits2 = self._stage(1, frame2, batch, keep)
        loss_stage2 = self._heatmap_loss(logits2, frame2, target)

        plane2, _ = cube_to_view(frame2.to_cube(target))
        prompt = self.cct.prompt_tokens(features2, plane2)
        bins_in = self._noisy_rotation_inputs(labels.rotation_bins) if self.training else labels.rotation_bins
        hat = self.cct.teacher_forced(prompt, bins_in)
        rot_logits, grip_logits, collision_logits = self.cct.action_heads(hat)

        terms = {
            "stage1_heatmap": loss_stage1,
            "stage2_heatmap": loss_stage2,
            "rot_x": F.cross_entropy(rot_logits[:, 0], labels.rotation_bins[:, 0]),
            "rot_y": F.cross_entropy(rot_logits[:, 1], labels.rotation_bins[:, 1]),
            "rot_z": F.cross_entropy(rot_logits[:, 2], labels.rotation_bins[:, 2]),
            "grip": F.cross_entropy(grip_logits, labels.gripper_open),
            "collision": F.cross_entropy(collision_logits, labels.ignore_collisions),
        }
        loss = torch.stack(list(terms.values())).sum()
        info: dict[str, Tensor] = {f"loss/{k}": v.detach() for k, v in terms.items()}
        info["loss/total"] = loss.detach()
        info["rotation_accuracy"] = (rot_logits.argmax(-1) == labels.rotation_bins).float().mean().detach()
        info["e"] = hat.mean(dim=1)
        return loss, info

    # ----------------------------------------------------------------- inference
    @torch.no_grad()
    def predict_action(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Sequential decoding -> ((B, 9) actions [x, y, z, qx, qy, qz, qw, gripper_open, ignore_collisions],
        (B, embed_dim) embodied representation e). Runs in eval mode and restores the previous mode."""
        prediction = self.predict(batch)
        return prediction.action, prediction.e

    @torch.no_grad()
    def predict(self, batch: dict[str, Tensor], coarse_prior: float = 0.0) -> KeyframePrediction:
        """:meth:`predict_action` with the coarse stage's point beside it: the fine stage only refines around
        that point (it trains within ``stage2_center_noise`` of the target), so where the coarse point lands
        is which object the keyframe goes to. ``coarse_prior`` > 0 places the keyframe where the fine score
        times the coarse score to that power is highest (:func:`lift_with_coarse_prior`) instead of at the
        fine score's maximum."""
        if coarse_prior < 0:
            raise ValueError(f"coarse_prior must be >= 0, got {coarse_prior}")
        c = self.config
        validate_batch(batch, c, require_action=False)
        was_training = self.training
        self.eval()
        try:
            B = batch["points"].shape[0]
            keep = in_bounds_mask(batch["points"], c.scene_bounds)
            frame1 = CubeFrame.from_bounds(c.scene_bounds, B, batch["points"].device)
            _, logits1 = self._stage(0, frame1, batch, keep)
            probabilities1 = logits1.flatten(-2).softmax(-1).view_as(logits1)
            coarse = self._clip_to_bounds(frame1.to_world(lift_heatmaps(probabilities1)))
            frame2 = frame1.zoom(coarse, c.zoom_factor)
            features2, logits2 = self._stage(1, frame2, batch, keep)
            probabilities2 = logits2.flatten(-2).softmax(-1).view_as(logits2)
            if coarse_prior > 0:
                fine_cube = lift_with_coarse_prior(
                    probabilities2, probabilities1, frame2, frame1, coarse_prior
                )
            else:
                fine_cube = lift_heatmaps(probabilities2)
            position = self._clip_to_bounds(frame2.to_world(fine_cube))
            plane2, _ = cube_to_view(fine_cube)
            bins, grip, collision, hat = self.cct.decode(self.cct.prompt_tokens(features2, plane2))
            action = labels_to_action(position, bins, grip, collision, c.rotation_bins)
            return KeyframePrediction(action, hat.mean(dim=1), coarse)
        finally:
            self.train(was_training)

    def _clip_to_bounds(self, points: Tensor) -> Tensor:
        b = torch.tensor(self.config.scene_bounds, dtype=points.dtype, device=points.device)
        return torch.maximum(torch.minimum(points, b[3:]), b[:3])
