"""ViCLIP (Wang et al., InternVid, 2023) in plain PyTorch: a video ViT and the CLIP text transformer.

The module tree and parameter names reproduce the released checkpoints key for key
(`vision_encoder.*`, `text_encoder.*`, `temp`), so an official state dict loads with `strict=True`.
Differences from upstream are behavioural only: random patch masking is tied to training mode (upstream
masks even in eval unless `test=True` is passed), drop-path is per sample, and the text context may be
shorter than `context_length`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .configuration_viclip import ViCLIPConfig
from .errors import InvalidTokensError
from .transformer_layers import LayerNorm, Transformer, clip_init_scale
from .video_input import prepare_video


def random_keep_indices(
    batch: int,
    length: int,
    masking_ratio: float,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Indices of the tokens kept per sample, in their original order.

    Upstream's selection: draw uniform noise per token, mask the `int(masking_ratio * length)` tokens that
    come first in its argsort, keep the rest. With the same random stream (CPU) this keeps exactly the
    tokens the official code keeps; `generator` is that stream (default: torch's global one).
    """
    masked = int(masking_ratio * length)
    noise = torch.rand(batch, length, device=device, generator=generator)
    return noise.argsort(dim=1)[:, masked:].sort(dim=1).values


class VisionTransformer(nn.Module):
    """Video ViT with joint space-time attention and a single CLS token per clip.

    Each frame is patchified on its own (Conv3d with a temporal kernel of 1, so a 5-D weight but no
    tubelets). Every patch gets the spatial embedding of its grid cell, shared across frames, plus the
    temporal embedding of its frame, shared across cells. The CLS token carries `positional_embedding[0]`
    only. Tokens are ordered patch-major, frame-minor, as upstream, before optional masking.
    """

    def __init__(self, config: ViCLIPConfig) -> None:
        super().__init__()
        self.config = config
        width, patch = config.vision_width, config.patch_size
        scale = clip_init_scale(width)
        # Registration order reproduces the official state-dict order.
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(config.patches_per_frame + 1, width))
        if config.use_temporal_embedding:
            # zeros, as when ViCLIP starts from an image CLIP: frames begin indistinguishable
            self.temporal_positional_embedding = nn.Parameter(torch.zeros(1, config.num_frames, width))
        else:
            self.temporal_positional_embedding = None
        self.proj = nn.Parameter(scale * torch.randn(width, config.embed_dim))
        self.conv1 = nn.Conv3d(3, width, kernel_size=(1, patch, patch), stride=(1, patch, patch), bias=False)
        self.ln_pre = LayerNorm(width, eps=1e-5)
        self.transformer = Transformer(
            width,
            config.vision_layers,
            config.vision_heads,
            config.vision_mlp_ratio,
            config.vision_drop_path_rate,
            config.activation_checkpointing,
        )
        self.ln_post = LayerNorm(width, eps=1e-5)
        self.transformer.init_clip_weights()
        self.masking_ratio = config.masking_ratio

    def embed_tokens(self, video: torch.Tensor) -> torch.Tensor:
        """Normalised `(B, T, 3, S, S)` -> patch tokens with position and time added, `(B, N*T, D)`; `T` is
        the config's frame count, or 1 for an image.

        The tokens take the parameters' dtype: under bf16 autocast only the matmuls run in bf16, the
        residual stream stays float32.
        """
        x = self.conv1(video.permute(0, 2, 1, 3, 4)).to(self.positional_embedding.dtype)  # (B, D, T, g, g)
        batch, width, frames = x.shape[:3]
        x = x.flatten(3).permute(0, 3, 2, 1)  # (B, N, T, D): patch-major, frame-minor
        x = x + self.positional_embedding[1:].unsqueeze(1).to(x.dtype)
        if self.temporal_positional_embedding is not None:
            temporal = self.temporal_positional_embedding.to(x.dtype)  # (1, T, D) broadcasts over N
            if frames == 1:  # an image: upstream gives it the mean temporal embedding
                temporal = temporal.mean(dim=1, keepdim=True)
            x = x + temporal
        return x.reshape(batch, -1, width)

    def forward(
        self, video: torch.Tensor, masking_ratio: float = 0.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Pooled, projected clip feature `(B, embed_dim)`, not normalised; `generator` drives the masking
        and stochastic depth (default: torch's global random stream)."""
        tokens = self.embed_tokens(video)
        batch, length, width = tokens.shape
        if masking_ratio > 0.0:
            keep = random_keep_indices(batch, length, masking_ratio, tokens.device, generator)
            tokens = tokens.gather(1, keep.unsqueeze(-1).expand(-1, -1, width))
        cls = (self.class_embedding + self.positional_embedding[0]).to(tokens.dtype).expand(batch, 1, width)
        x = self.ln_pre(torch.cat([cls, tokens], dim=1))
        x = self.ln_post(self.transformer(x, generator=generator))
        return x[:, 0] @ self.proj


class TextTransformer(nn.Module):
    """CLIP text transformer: causal attention, pooled at the end-of-text token, then projected."""

    def __init__(self, config: ViCLIPConfig) -> None:
        super().__init__()
        self.config = config
        width = config.text_width
        self.positional_embedding = nn.Parameter(0.01 * torch.randn(config.context_length, width))
        self.text_projection = nn.Parameter(clip_init_scale(width) * torch.randn(width, config.embed_dim))
        self.transformer = Transformer(
            width,
            config.text_layers,
            config.text_heads,
            config.text_mlp_ratio,
            checkpoint_activations=config.activation_checkpointing,
        )
        self.token_embedding = nn.Embedding(config.vocab_size, width)
        self.ln_final = LayerNorm(width, eps=1e-5)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.transformer.init_clip_weights()

    def token_features(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Per-token features after `ln_final`, `(N, L, text_width)`; position i sees tokens <= i only."""
        length = token_ids.shape[1]
        x = self.token_embedding(token_ids) + self.positional_embedding[:length]
        return self.ln_final(self.transformer(x, causal=True))

    @staticmethod
    def pooling_positions(token_ids: torch.Tensor) -> torch.Tensor:
        """Index of the end-of-text token per row: it is the largest id in CLIP's vocabulary (49407)."""
        return token_ids.argmax(dim=-1)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Projected sentence feature `(N, embed_dim)`, not normalised."""
        features = self.token_features(token_ids)
        rows = torch.arange(features.shape[0], device=features.device)
        pooled = features[rows, self.pooling_positions(token_ids)]
        return pooled @ self.text_projection


@dataclass
class ViCLIPOutput:
    """Everything one contrastive step produces.

    `video_features` is u for the mirror alignment (see `ViCLIP.video_features`); the embeddings are
    L2-normalised; `logits_per_video[i, j]` = cos(video i, text j) / temperature.
    """

    loss: torch.Tensor
    logits_per_video: torch.Tensor
    logits_per_text: torch.Tensor
    video_features: torch.Tensor
    video_embeds: torch.Tensor
    text_embeds: torch.Tensor


def contrastive_targets(match_ids: torch.Tensor | None, size: int, device: torch.device) -> torch.Tensor:
    """Row-normalised target distribution: pairs that share an id (e.g. the same instruction) are all
    positives, as in ViCLIP's VTC loss; without ids only the diagonal is positive."""
    if match_ids is None:
        return torch.eye(size, device=device)
    if match_ids.shape != (size,):
        raise ValueError(f"match_ids must have shape ({size},), got {tuple(match_ids.shape)}")
    same = (match_ids.view(-1, 1) == match_ids.view(1, -1)).float().to(device)
    return same / same.sum(dim=1, keepdim=True)


def video_text_contrastive_loss(
    logits_per_video: torch.Tensor, match_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric InfoNCE: mean of the video->text and text->video cross-entropies."""
    targets = contrastive_targets(match_ids, logits_per_video.shape[0], logits_per_video.device)
    loss_v2t = -(targets * F.log_softmax(logits_per_video, dim=1)).sum(dim=1).mean()
    loss_t2v = -(targets * F.log_softmax(logits_per_video.t(), dim=1)).sum(dim=1).mean()
    return 0.5 * (loss_v2t + loss_t2v)


class ViCLIP(nn.Module):
    """Video-text contrastive model: `temp`, `vision_encoder` and `text_encoder`, as in the checkpoints."""

    def __init__(self, config: ViCLIPConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.temp = nn.Parameter(torch.tensor(float(config.temperature_init)))
        self.temp.requires_grad_(config.learnable_temperature)
        self.vision_encoder = VisionTransformer(config)
        self.text_encoder = TextTransformer(config)

    # temperature
    @property
    def temperature(self) -> torch.Tensor:
        """Learned temperature, clamped below at `temperature_min` (ViCLIP clamps to 0.01: scale <= 100)."""
        return self.temp.clamp(min=self.config.temperature_min)

    @property
    def logit_scale(self) -> torch.Tensor:
        return 1.0 / self.temperature

    @torch.no_grad()
    def set_temperature(self, value: float) -> None:
        """Overwrite the temperature, e.g. with the paper's fine-tuning tau_vclip = 0.05."""
        if not value >= self.config.temperature_min:
            raise ValueError(f"temperature {value} is below temperature_min {self.config.temperature_min}")
        self.temp.fill_(value)

    # masking
    @property
    def masking_ratio(self) -> float:
        """Fraction of patch tokens dropped per clip when the model is in training mode."""
        return self.vision_encoder.masking_ratio

    @masking_ratio.setter
    def masking_ratio(self, value: float) -> None:
        if not 0.0 <= value < 1.0:
            raise ValueError(f"masking_ratio must be in [0, 1), got {value}")
        self.vision_encoder.masking_ratio = float(value)

    # encoders
    def preprocess_video(self, frames: torch.Tensor | np.ndarray) -> torch.Tensor:
        """uint8 `(B,T,H,W,3)` or normalised float `(B,T,3,S,S)` -> normalised float on the model's device."""
        param = self.vision_encoder.proj
        return prepare_video(frames, self.config, device=param.device, dtype=param.dtype)

    def video_features(
        self, frames: torch.Tensor | np.ndarray, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """u, the video feature that the mirror alignment maps into the shared space: `(B, embed_dim)`.

        It is the video encoder's output as ViCLIP defines it: the CLS token after `ln_post`, projected
        by `proj` into the joint video-text space, before L2 normalisation. The paper takes "the output
        feature of the video encoder as u" (Sec. 3); this is that output, and it is the same vector the
        AU loss normalises, so the alignment shapes exactly the representation used for recognition.
        In training mode the clip is masked (`masking_ratio`), as in the AU forward pass; `generator` is the
        random stream of that masking and of stochastic depth (default: torch's global one; a private one
        keeps a run reproducible when this runs on another thread, as in joint training).
        """
        video = self.preprocess_video(frames)
        ratio = self.masking_ratio if self.training else 0.0
        return self.vision_encoder(video, masking_ratio=ratio, generator=generator)

    def encode_video(self, frames: torch.Tensor | np.ndarray, normalize: bool = True) -> torch.Tensor:
        """Video embedding `(B, embed_dim)`, L2-normalised unless `normalize=False` (then it equals u)."""
        features = self.video_features(frames)
        return F.normalize(features.float(), dim=-1) if normalize else features

    def check_token_ids(self, token_ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(token_ids, torch.Tensor) or token_ids.ndim != 2 or token_ids.shape[0] == 0:
            got = tuple(token_ids.shape) if isinstance(token_ids, torch.Tensor) else type(token_ids).__name__
            raise InvalidTokensError(f"token ids must be a non-empty (N, L) tensor, got {got}")
        if token_ids.dtype.is_floating_point or token_ids.dtype == torch.bool:
            raise InvalidTokensError(f"token ids must be integers, got {token_ids.dtype}")
        if not 1 <= token_ids.shape[1] <= self.config.context_length:
            raise InvalidTokensError(
                f"token sequences must have 1..{self.config.context_length} positions, "
                f"got {token_ids.shape[1]}"
            )
        if token_ids.min() < 0 or token_ids.max() >= self.config.vocab_size:
            raise InvalidTokensError(f"token ids outside [0, {self.config.vocab_size})")
        return token_ids.to(device=self.temp.device, dtype=torch.long)

    def encode_text(self, token_ids: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Text embedding `(N, embed_dim)` from `(N, L)` token ids (start/end tokens included, 0-padded)."""
        features = self.text_encoder(self.check_token_ids(token_ids))
        return F.normalize(features.float(), dim=-1) if normalize else features

    def similarity_logits(self, video_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """cos / temperature for already-normalised embeddings: `(B_video, N_text)`, float32 also inside a
        bf16 autocast region (at a logit scale of up to 100, bf16 rounding would move logits by ~0.4)."""
        with torch.autocast(video_embeds.device.type, enabled=False):
            return self.logit_scale.float() * video_embeds.float() @ text_embeds.float().t()

    def forward(
        self,
        frames: torch.Tensor | np.ndarray,
        token_ids: torch.Tensor,
        match_ids: torch.Tensor | None = None,
        text_targets: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> ViCLIPOutput:
        """Video-text InfoNCE on a batch of paired clips and instructions (the paper's AU loss).

        `match_ids` (optional, `(B,)`) marks pairs sharing an instruction so they are not counted as
        negatives of each other; without it pair i is the only positive of clip i.

        With `text_targets` (`(B,)` indices into `token_ids`), `token_ids` is instead a set of candidate texts
        (e.g. the whole instruction vocabulary) and the loss is each clip's cross-entropy over all of them:
        every other instruction is a negative, even when the batch is too small to hold it. `generator`: as
        in `video_features`.
        """
        token_ids = self.check_token_ids(token_ids)
        video_features = self.video_features(frames, generator)
        if text_targets is None and token_ids.shape[0] != video_features.shape[0]:
            raise InvalidTokensError(
                f"need one text per clip: {video_features.shape[0]} clips, {token_ids.shape[0]} texts"
            )
        video_embeds = F.normalize(video_features.float(), dim=-1)
        text_embeds = self.encode_text(token_ids)
        logits = self.similarity_logits(video_embeds, text_embeds)
        if text_targets is None:
            loss = video_text_contrastive_loss(logits, match_ids)
        else:
            if text_targets.shape != (video_features.shape[0],):
                raise InvalidTokensError(
                    f"text_targets must hold one index per clip, got shape {tuple(text_targets.shape)}"
                )
            loss = F.cross_entropy(logits.float(), text_targets.to(logits.device))
        return ViCLIPOutput(loss, logits, logits.t(), video_features, video_embeds, text_embeds)
