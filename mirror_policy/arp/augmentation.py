"""Training-time batch augmentation of ARP / RVT (research/arp.md section 6).

* **SE(3), action-centric:** per sample, a yaw rotation uniform in +-``aug_yaw_deg`` about the vertical axis
  through the target gripper position, then a translation uniform in +-``aug_translation`` x scene extent per
  axis, clamped so that the target stays inside the scene bounds. The same transform moves the whole point
  cloud and the target pose (position and orientation; the quaternion is re-canonicalised to qw >= 0), so
  the scene-to-action relation is unchanged while the absolute layout varies. Roll and pitch are not
  perturbed (gravity-aligned tasks).
* **RGB noise:** per sample s ~ U(0, ``aug_rgb_noise``), then U(-s, s) added to every colour value,
  clamped to [0, 1].

The stage-2 zoom-centre noise and the rotation-token input noise are applied inside the model.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mirror_policy.arp.action_tokens import (
    canonical_quaternion,
    quaternion_multiply,
    validate_action_vectors,
    yaw_quaternion,
)
from mirror_policy.arp.configuration import ARPConfig


def _uniform(
    shape: tuple[int, ...], scale: Tensor | float, generator: torch.Generator | None, like: Tensor
) -> Tensor:
    u = torch.rand(shape, generator=generator, dtype=like.dtype).to(like.device)
    return (u * 2.0 - 1.0) * scale


def se3_augment(
    points: Tensor,
    action: Tensor,
    bounds: tuple[float, ...],
    translation: float,
    yaw_deg: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Move (B, N, 3) world points and (B, 9) target actions by one random yaw + translation per sample."""
    validate_action_vectors(action)
    B = points.shape[0]
    b = torch.tensor(bounds, dtype=points.dtype, device=points.device)
    lo, hi = b[:3], b[3:]
    target = action[:, :3].to(points.dtype)
    shift = _uniform((B, 3), translation * (hi - lo), generator, points)
    shift = torch.maximum(torch.minimum(shift, hi - target), lo - target)
    yaw = _uniform((B,), math.radians(yaw_deg), generator, points)
    cos, sin, zero, one = torch.cos(yaw), torch.sin(yaw), torch.zeros_like(yaw), torch.ones_like(yaw)
    rot = torch.stack([cos, -sin, zero, sin, cos, zero, zero, zero, one], dim=-1).view(B, 3, 3)

    moved = torch.einsum("bij,bnj->bni", rot, points - target[:, None]) + (target + shift)[:, None]
    quat = canonical_quaternion(quaternion_multiply(yaw_quaternion(yaw).to(action.dtype), action[:, 3:7]))
    new_action = torch.cat([(target + shift).to(action.dtype), quat, action[:, 7:]], dim=-1)
    return moved, new_action


def rgb_noise(rgb: Tensor, max_scale: float, generator: torch.Generator | None = None) -> Tensor:
    """(B, N, 3) colours + per-sample-scaled uniform noise, clamped to [0, 1]."""
    B = rgb.shape[0]
    scale = torch.rand((B, 1, 1), generator=generator, dtype=rgb.dtype).to(rgb.device) * max_scale
    noise = _uniform(tuple(rgb.shape), 1.0, generator, rgb) * scale
    return (rgb + noise).clamp(0.0, 1.0)


def augment_batch(
    batch: dict[str, Tensor], config: ARPConfig, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """A new batch with SE(3)-augmented ``points`` / ``action`` and noisy ``rgb``; the input is untouched."""
    if "action" not in batch:
        raise ValueError("augment_batch needs the target 'action' (augmentation is training-only)")
    points, action = se3_augment(
        batch["points"],
        batch["action"],
        config.scene_bounds,
        config.aug_translation,
        config.aug_yaw_deg,
        generator,
    )
    out = dict(batch)
    out["points"], out["action"] = points, action
    out["rgb"] = rgb_noise(batch["rgb"], config.aug_rgb_noise, generator)
    return out
