"""Typed configuration of the ARP policy (autoregressive keyframe policy with an MVT backbone).

Two named configurations exist:

* ``paper``: the numbers of the ARP paper / the Mirror supplement (Table 5): 8 CCT layers (4 cross + 4 self),
  embedding 128, MLP 512, two MVT backbones of 8 layers at width 512 over three 224x224 virtual views,
  72 rotation bins of 5 degrees, 4x zoom for the fine position stage (research/arp.md sections 3, 4, 12).
* ``cpu_tiny``: the same architecture shrunk so that it trains on two CPU cores (64x64 views, 2+2 layers).

A config round-trips through JSON (``to_json`` / ``from_json``) so that checkpoints carry their config.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from mirror_common.errors import MirrorError
from mirror_common.serialization import JsonConfig, reject_unknown_fields
from sim_bridge.cameras import CAMERA_NAMES

# PerAct / RVT / ARP workspace: x [-0.3, 0.7], y [-0.5, 0.5], z [0.6, 1.6] metres (a 1 m cube).
PERACT_SCENE_BOUNDS: tuple[float, float, float, float, float, float] = (-0.3, -0.5, 0.6, 0.7, 0.5, 1.6)
KNOWN_CAMERAS: frozenset[str] = frozenset((*CAMERA_NAMES, "overhead"))


# Fields that shape training only (dropout is inactive in eval mode, noise and augmentation are train-time).
TRAINING_ONLY_FIELDS: frozenset[str] = frozenset(
    (
        "dropout",
        "stage2_center_noise",
        "rotation_input_noise_offsets",
        "rotation_input_noise_probs",
        "aug_translation",
        "aug_yaw_deg",
        "aug_rgb_noise",
        "activation_checkpointing",
    )
)


# Switches that add modules which start as the identity: a checkpoint trained without one initialises (--init)
# a model with it, which then starts out computing exactly what the checkpoint did.
IDENTITY_AT_START_FIELDS: frozenset[str] = frozenset(("language_film",))


class ARPConfigError(MirrorError, ValueError):
    """An ARP configuration that is inconsistent or names an unknown option."""


@dataclass(frozen=True)
class ARPConfig(JsonConfig):
    """All hyper-parameters of :class:`mirror_policy.arp.modeling.ARPPolicy`.

    Observation:
        cameras: RLBench cameras whose point clouds are fused.
        camera_resolution: required RGB / depth size of each camera (RLBench: 128x128).
        point_stride: keep every ``point_stride``-th pixel per row and column of each camera (cpu_tiny: 2).
        proprio_dim: low-dim state size, ``[gripper_open, finger_1, finger_2, time]`` (PerAct's layout).
        lang_dim: width of the precomputed per-token language features (ViCLIP-B / CLIP text width: 512).
        max_lang_len: longest accepted language token sequence.
        scene_bounds: ``(x_min, y_min, z_min, x_max, y_max, z_max)`` of the workspace crop, metres.
    Virtual views:
        img_size: resolution of each orthographic virtual view.
        img_patch_size: MVT patch size (tokens per view = (img_size / img_patch_size)^2).
        splat_radius: splat disc radius in cube units (the cube [-1, 1]^3 spans the scene bounds).
        zoom_factor: the fine stage re-renders a cube ``zoom_factor`` times smaller around the coarse point.
    MVT backbone (two copies, one per stage):
        mvt_im_channels: patch-embedding channels; proprio adds as many, so tokens have twice this width.
        mvt_attn_dim / mvt_heads / mvt_dim_head / mvt_ff_mult: transformer width, heads and GEGLU ratio.
        mvt_view_layers: layers within each view; mvt_joint_layers: layers over language + all views.
        mvt_attn_dropout: attention dropout.
        language_film: also scale and shift every MVT layer's image tokens per channel by the instruction
            (FiLM from the mean language token), zero-initialised so that a model starts as without it.
    Chunking causal transformer (CCT):
        embed_dim / num_heads / mlp_dim: token width, heads, MLP hidden size.
        cross_layers: AdaLN blocks conditioned on one view's MVT tokens (position queries).
        self_layers: causal blocks over the prompt and the rotation / gripper / collision tokens.
        dropout: dropout on embeddings, attention, residuals and MLP.
        upsample_hidden_mult: hidden channels of the heatmap upsampler = mult * embed_dim.
    Actions:
        rotation_bins: bins per Euler angle (72 = 5 degrees).
        heatmap_sigma_px: standard deviation of the Gaussian heatmap target, pixels.
    Training noise inside the model (active only in ``train()`` mode):
        stage2_center_noise: the fine stage is centred on the true point plus U(-n, n) coarse cube units.
        rotation_input_noise_offsets / _probs: teacher-forced rotation-bin inputs are shifted by an offset
            drawn with these probabilities (ARP's config lists an asymmetric typo; we use the symmetric set).
    Batch augmentation (``mirror_policy.arp.augmentation``):
        aug_translation: uniform translation per axis, as a fraction of the scene extent.
        aug_yaw_deg: uniform yaw about the target gripper position, degrees.
        aug_rgb_noise: per-sample RGB noise scale s ~ U(0, aug_rgb_noise), noise U(-s, s).
    """

    _json_what = "ARPConfig"
    _json_error = ARPConfigError

    name: str = "cpu_tiny"
    cameras: tuple[str, ...] = CAMERA_NAMES
    camera_resolution: int = 128
    point_stride: int = 2
    proprio_dim: int = 4
    lang_dim: int = 512
    max_lang_len: int = 77
    scene_bounds: tuple[float, float, float, float, float, float] = PERACT_SCENE_BOUNDS
    img_size: int = 64
    img_patch_size: int = 8
    splat_radius: float = 0.03
    zoom_factor: float = 4.0
    mvt_im_channels: int = 32
    mvt_attn_dim: int = 128
    mvt_heads: int = 4
    mvt_dim_head: int = 32
    mvt_ff_mult: int = 2
    mvt_view_layers: int = 2
    mvt_joint_layers: int = 2
    mvt_attn_dropout: float = 0.1
    language_film: bool = False
    embed_dim: int = 64
    num_heads: int = 4
    mlp_dim: int = 256
    cross_layers: int = 2
    self_layers: int = 2
    dropout: float = 0.1
    upsample_hidden_mult: float = 1.0
    rotation_bins: int = 72
    heatmap_sigma_px: float = 1.5
    stage2_center_noise: float = 0.1
    rotation_input_noise_offsets: tuple[int, ...] = (-2, -1, 0, 1, 2)
    rotation_input_noise_probs: tuple[float, ...] = (0.1, 0.2, 0.4, 0.2, 0.1)
    aug_translation: float = 0.125
    aug_yaw_deg: float = 45.0
    aug_rgb_noise: float = 0.05
    activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        self._validate()

    # ------------------------------------------------------------------ derived quantities
    @property
    def rotation_resolution_deg(self) -> float:
        return 360.0 / self.rotation_bins

    @property
    def tokens_per_side(self) -> int:
        return self.img_size // self.img_patch_size

    @property
    def scene_center(self) -> tuple[float, float, float]:
        lo, hi = self.scene_bounds[:3], self.scene_bounds[3:]
        return tuple((a + b) / 2.0 for a, b in zip(lo, hi))  # type: ignore[return-value]

    @property
    def scene_half_size(self) -> tuple[float, float, float]:
        lo, hi = self.scene_bounds[:3], self.scene_bounds[3:]
        return tuple((b - a) / 2.0 for a, b in zip(lo, hi))  # type: ignore[return-value]

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        def need(condition: bool, message: str) -> None:
            if not condition:
                raise ARPConfigError(f"ARPConfig {self.name!r}: {message}")

        need(len(self.cameras) > 0, "at least one camera is required")
        unknown = sorted(set(self.cameras) - KNOWN_CAMERAS)
        need(not unknown, f"unknown cameras {unknown}; known: {sorted(KNOWN_CAMERAS)}")
        need(len(set(self.cameras)) == len(self.cameras), "cameras must be distinct")
        need(self.camera_resolution > 0, "camera_resolution must be positive")
        need(
            self.point_stride >= 1 and self.camera_resolution % self.point_stride == 0,
            "point_stride must be >= 1 and divide camera_resolution",
        )
        need(self.proprio_dim >= 1 and self.lang_dim >= 1 and self.max_lang_len >= 1, "dims must be >= 1")
        need(len(self.scene_bounds) == 6, "scene_bounds needs 6 numbers (min xyz, max xyz)")
        need(all(math.isfinite(b) for b in self.scene_bounds), "scene_bounds must be finite")
        need(all(self.scene_bounds[i] < self.scene_bounds[i + 3] for i in range(3)), "scene_bounds min < max")
        need(self.img_size > 0 and self.img_patch_size > 0, "img_size and img_patch_size must be positive")
        need(self.img_size % self.img_patch_size == 0, "img_patch_size must divide img_size")
        need(self.splat_radius >= 0.0, "splat_radius must be >= 0")
        need(self.zoom_factor >= 1.0, "zoom_factor must be >= 1")
        need(self.mvt_im_channels % 4 == 0, "mvt_im_channels must be a multiple of 4 (GroupNorm(4))")
        need((2 * self.mvt_im_channels) % 4 == 0, "token width must be a multiple of 4")
        need(self.mvt_heads >= 1 and self.mvt_dim_head >= 1 and self.mvt_ff_mult >= 1, "bad MVT attention")
        need(self.mvt_view_layers >= 0 and self.mvt_joint_layers >= 1, "MVT needs >= 1 joint layer")
        need(self.embed_dim % self.num_heads == 0, "embed_dim must be divisible by num_heads")
        need(self.mlp_dim >= 1, "mlp_dim must be >= 1")
        need(self.cross_layers >= 1 and self.self_layers >= 1, "CCT needs >= 1 cross and >= 1 self layer")
        need(0.0 <= self.dropout < 1.0 and 0.0 <= self.mvt_attn_dropout < 1.0, "dropout must be in [0, 1)")
        need(self.upsample_hidden_mult > 0, "upsample_hidden_mult must be positive")
        need(self.rotation_bins >= 4 and 360 % self.rotation_bins == 0, "rotation_bins must divide 360")
        need(self.heatmap_sigma_px > 0, "heatmap_sigma_px must be positive")
        need(self.stage2_center_noise >= 0, "stage2_center_noise must be >= 0")
        need(
            len(self.rotation_input_noise_offsets) == len(self.rotation_input_noise_probs) > 0,
            "rotation noise offsets and probabilities must have the same non-zero length",
        )
        need(
            all(p >= 0 for p in self.rotation_input_noise_probs)
            and abs(sum(self.rotation_input_noise_probs) - 1.0) < 1e-6,
            "rotation noise probabilities must be >= 0 and sum to 1",
        )
        need(self.aug_translation >= 0 and self.aug_yaw_deg >= 0 and self.aug_rgb_noise >= 0, "aug >= 0")

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def model_dict(self) -> dict[str, Any]:
        """``to_dict`` without the training-only noise and augmentation fields: two configs with equal model
        dicts build the same network and act identically, so weights move freely between them."""
        return {k: v for k, v in self.to_dict().items() if k not in TRAINING_ONLY_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ARPConfig:
        reject_unknown_fields(cls, data, "ARPConfig", ARPConfigError)
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)

    def replace(self, **changes: Any) -> ARPConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    # ------------------------------------------------------------------ named configurations
    @classmethod
    def cpu_tiny(cls) -> ARPConfig:
        """Small enough to train on two CPU cores: about 2 M parameters, 64x64 virtual views."""
        return cls(name="cpu_tiny")

    @classmethod
    def paper(cls) -> ARPConfig:
        """ARP as published (research/arp.md section 12, Mirror supplement Table 5)."""
        return cls(
            name="paper",
            point_stride=1,
            img_size=224,
            img_patch_size=14,
            splat_radius=0.012,
            mvt_im_channels=64,
            mvt_attn_dim=512,
            mvt_heads=8,
            mvt_dim_head=64,
            mvt_ff_mult=4,
            mvt_view_layers=4,
            mvt_joint_layers=4,
            embed_dim=128,
            num_heads=8,
            mlp_dim=512,
            cross_layers=4,
            self_layers=4,
            upsample_hidden_mult=1.25,
        )


NAMED_CONFIGS = {"cpu_tiny": ARPConfig.cpu_tiny, "paper": ARPConfig.paper}


def named_config(name: str) -> ARPConfig:
    """The named configuration ``name`` (``cpu_tiny`` or ``paper``)."""
    if name not in NAMED_CONFIGS:
        raise ARPConfigError(f"unknown ARP config {name!r}; choose from {sorted(NAMED_CONFIGS)}")
    return NAMED_CONFIGS[name]()
