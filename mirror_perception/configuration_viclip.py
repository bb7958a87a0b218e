"""ViCLIP configuration: one typed dataclass plus the named presets.

The two official presets reproduce the released InternVid checkpoints exactly (key names and shapes in
`test/data/viclip_keys/`); `cpu_tiny` is our from-scratch size for two CPU cores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from mirror_common.serialization import JsonConfig, reject_unknown_fields

from .errors import ConfigError

# ViCLIP normalises with ImageNet statistics, not CLIP's (InternVideo's "vit" branch and its demo).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

CLIP_VOCAB_SIZE = 49408
_POSITIVE_INT_FIELDS = (
    "vision_width",
    "vision_layers",
    "vision_heads",
    "vision_mlp_ratio",
    "patch_size",
    "input_size",
    "num_frames",
    "text_width",
    "text_layers",
    "text_heads",
    "text_mlp_ratio",
    "context_length",
    "vocab_size",
    "embed_dim",
)


@dataclass
class ViCLIPConfig(JsonConfig):
    """Every size and training knob of a ViCLIP model.

    Vision: a ViT over `num_frames` frames of `input_size`^2 pixels, cut per frame into `patch_size`^2
    patches (no tubelets), with joint space-time attention over all patches of all frames.
    Text: the CLIP text transformer with a `context_length`-token causal context.
    Both towers are projected to `embed_dim` and compared by cosine similarity over a learned
    temperature `temp` (logits = cos / temp, temp clamped below at `temperature_min`).
    """

    _json_what = "ViCLIP config"
    _json_error = ConfigError

    name: str = "custom"
    # video tower
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    vision_mlp_ratio: int = 4
    patch_size: int = 16
    input_size: int = 224
    num_frames: int = 8
    use_temporal_embedding: bool = True
    vision_drop_path_rate: float = 0.1
    # fraction of patch tokens dropped per clip in training mode (never at inference)
    masking_ratio: float = 0.9
    # recompute each transformer block's activations in backward instead of keeping them (memory for compute)
    activation_checkpointing: bool = False
    # text tower
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    text_mlp_ratio: int = 4
    context_length: int = 32
    vocab_size: int = CLIP_VOCAB_SIZE
    # joint space
    embed_dim: int = 512
    temperature_init: float = 0.01
    temperature_min: float = 0.01
    learnable_temperature: bool = True
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        self.image_mean = tuple(float(v) for v in self.image_mean)  # JSON gives lists
        self.image_std = tuple(float(v) for v in self.image_std)
        self.validate()

    # derived sizes
    @property
    def grid_size(self) -> int:
        return self.input_size // self.patch_size

    @property
    def patches_per_frame(self) -> int:
        return self.grid_size**2

    @property
    def num_video_tokens(self) -> int:
        """Video sequence length without masking: one CLS plus every patch of every frame."""
        return 1 + self.num_frames * self.patches_per_frame

    def validate(self) -> None:
        for field_name in _POSITIVE_INT_FIELDS:
            value = getattr(self, field_name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{field_name} must be a positive int, got {value!r}")
        if self.vision_width % self.vision_heads:
            raise ConfigError(f"vision_width {self.vision_width} not divisible by {self.vision_heads} heads")
        if self.text_width % self.text_heads:
            raise ConfigError(f"text_width {self.text_width} not divisible by {self.text_heads} heads")
        if self.input_size % self.patch_size:
            raise ConfigError(f"input_size {self.input_size} not divisible by patch_size {self.patch_size}")
        if not 0.0 <= self.masking_ratio < 1.0:
            raise ConfigError(f"masking_ratio must be in [0, 1), got {self.masking_ratio}")
        if not 0.0 <= self.vision_drop_path_rate < 1.0:
            raise ConfigError(f"vision_drop_path_rate must be in [0, 1), got {self.vision_drop_path_rate}")
        if self.context_length < 2:
            raise ConfigError("context_length must hold at least the start and end tokens")
        if not (self.temperature_min > 0.0 and self.temperature_init >= self.temperature_min):
            raise ConfigError(
                "need 0 < temperature_min <= temperature_init, "
                f"got {self.temperature_min} and {self.temperature_init}"
            )
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ConfigError("image_mean/image_std must be 3 values with positive std")

    # serialisation
    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["image_mean"] = list(self.image_mean)
        out["image_std"] = list(self.image_std)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViCLIPConfig:
        reject_unknown_fields(cls, data, "ViCLIPConfig", ConfigError)
        return cls(**data)


def _official(name: str, **sizes: Any) -> ViCLIPConfig:
    # Upstream pre-training recipe: 224^2, 8 frames, 90% masking, drop-path 0.1, temp 0.01 clamped at 0.01.
    return ViCLIPConfig(
        name=name,
        input_size=224,
        num_frames=8,
        masking_ratio=0.9,
        vision_drop_path_rate=0.1,
        context_length=32,
        vocab_size=CLIP_VOCAB_SIZE,
        temperature_init=0.01,
        temperature_min=0.01,
        **sizes,
    )


def _presets() -> dict[str, ViCLIPConfig]:
    return {
        # 128^2 is the native RLBench camera resolution, so clips need no resampling; with 16-pixel
        # patches that is an 8x8 grid, 64 patches per frame and 513 tokens per 8-frame clip, and
        # training-time masking of half the patches halves the cost again. Text keeps the real CLIP
        # vocabulary so that instructions tokenise exactly as for the official models.
        "cpu_tiny": ViCLIPConfig(
            name="cpu_tiny",
            vision_width=128,
            vision_layers=4,
            vision_heads=4,
            patch_size=16,
            input_size=128,
            num_frames=8,
            vision_drop_path_rate=0.0,
            masking_ratio=0.5,
            text_width=128,
            text_layers=3,
            text_heads=4,
            embed_dim=128,
            # tau_vclip = 0.05 is the paper's fine-tuning temperature (supplement C.1)
            temperature_init=0.05,
            temperature_min=0.01,
        ),
        "ViCLIP-B/16": _official(
            "ViCLIP-B/16",
            vision_width=768,
            vision_layers=12,
            vision_heads=12,
            patch_size=16,
            text_width=512,
            text_layers=12,
            text_heads=8,
            embed_dim=512,
        ),
        "ViCLIP-L/14": _official(
            "ViCLIP-L/14",
            vision_width=1024,
            vision_layers=24,
            vision_heads=16,
            patch_size=14,
            text_width=768,
            text_layers=12,
            text_heads=12,
            embed_dim=768,
        ),
    }


CONFIG_NAMES: tuple[str, ...] = tuple(_presets())


def get_config(preset: str, /, **overrides: Any) -> ViCLIPConfig:
    """A fresh copy of a named preset with any fields replaced (validated again), ``name`` included."""
    presets = _presets()
    if preset not in presets:
        raise ConfigError(f"unknown ViCLIP config {preset!r}; known: {list(presets)}")
    reject_unknown_fields(ViCLIPConfig, overrides, "ViCLIPConfig", ConfigError)
    return replace(presets[preset], **overrides)
