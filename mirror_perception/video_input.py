"""Turning camera frames into the normalised clip tensor the video encoder expects.

Two input forms are accepted, so callers never have to guess which one they hold:
- uint8 frames `(B, T, H, W, 3)` straight from cameras: resized to `input_size`^2 when needed
  (bicubic with antialiasing, no crop: ViCLIP squashes the aspect ratio rather than cropping),
  scaled to [0, 1] and normalised with ImageNet statistics;
- float frames `(B, T, 3, input_size, input_size)`: taken as already normalised (the output of a data
  pipeline that did its own augmentation), passed through unchanged apart from device/dtype.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .configuration_viclip import ViCLIPConfig
from .errors import InvalidVideoError


def _as_tensor(frames: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(frames, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(frames))
    if isinstance(frames, torch.Tensor):
        return frames
    raise InvalidVideoError(f"frames must be a torch.Tensor or numpy array, got {type(frames).__name__}")


def normalize_uint8_frames(
    frames: torch.Tensor, config: ViCLIPConfig, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """uint8 `(B, T, H, W, 3)` -> normalised float `(B, T, 3, S, S)` with S = config.input_size."""
    batch, num_frames, height, width, _ = frames.shape
    x = frames.permute(0, 1, 4, 2, 3).reshape(batch * num_frames, 3, height, width).to(torch.float32) / 255.0
    size = config.input_size
    if (height, width) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False, antialias=True)
        x = x.clamp_(0.0, 1.0)
    mean = torch.tensor(config.image_mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(config.image_std, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x.view(batch, num_frames, 3, size, size).to(dtype)


def prepare_video(
    frames: torch.Tensor | np.ndarray,
    config: ViCLIPConfig,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Validate a batch of clips and return the normalised `(B, T, 3, S, S)` tensor on `device`."""
    x = _as_tensor(frames)
    if x.ndim != 5:
        raise InvalidVideoError(
            "expected a batch of clips with 5 dims, uint8 (B,T,H,W,3) or float (B,T,3,H,W); "
            f"got shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise InvalidVideoError("empty batch of clips")
    if x.shape[1] not in (config.num_frames, 1):
        raise InvalidVideoError(
            f"config {config.name!r} takes exactly {config.num_frames} frames per clip (or 1, an image), got "
            f"{x.shape[1]} (use sample_clip_indices to pick them)"
        )
    if x.dtype == torch.uint8:
        if x.shape[-1] != 3:
            raise InvalidVideoError(f"uint8 frames must be channels-last (B,T,H,W,3), got {tuple(x.shape)}")
        if min(x.shape[2], x.shape[3]) == 0:
            raise InvalidVideoError(f"frames have zero size: {tuple(x.shape)}")
        return normalize_uint8_frames(x.to(device), config, dtype)
    if not x.is_floating_point():
        raise InvalidVideoError(f"frames must be uint8 or floating point, got {x.dtype}")
    size = config.input_size
    if tuple(x.shape[2:]) != (3, size, size):
        raise InvalidVideoError(
            f"float frames must be normalised (B,T,3,{size},{size}) for config {config.name!r}, "
            f"got {tuple(x.shape)}; pass uint8 (B,T,H,W,3) to have them resized and normalised"
        )
    if not torch.isfinite(x).all():
        raise InvalidVideoError("float frames contain NaN or infinite values")
    return x.to(device=device, dtype=dtype)
