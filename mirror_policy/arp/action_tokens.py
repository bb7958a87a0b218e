"""RLBench action vector <-> ARP's discrete action tokens, in batched PyTorch.

Action vector (RLBench ``MoveArmThenGripper``): ``[x, y, z, qx, qy, qz, qw, gripper_open, ignore_collisions]``
in the world frame, quaternion in scipy/PyRep ``xyzw`` order.

Labels (PerAct / RVT / ARP): the quaternion is normalised and flipped so that ``qw >= 0``, converted to
*extrinsic* ``xyz`` Euler angles (scipy's lowercase ``'xyz'``: R = Rz(c) Ry(b) Rx(a)) in degrees, shifted
by +180 and divided into ``bins`` bins (72 x 5 degrees); ``bin = round((deg + 180) / res) mod bins``, decoded
as ``bin * res - 180``. The position stays continuous: ARP predicts it as 2D heatmaps (see ``renderer``).

Gimbal lock (pitch ``b`` within ~1e-3 rad of +-90 deg): roll and yaw are not unique there, so yaw is set to 0
and roll takes the whole remaining angle. Every rotation thus has exactly one label; decoding the label gives
the same rotation up to the bin quantisation (at most 2.5 deg per angle, 7.5 deg geodesic by the triangle
inequality; typically under 4 deg).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sim_bridge.errors import InvalidActionError

ACTION_SIZE = 9
QUATERNION_NORM_TOLERANCE = 0.05
_GIMBAL_EPS = 1e-6  # |cos(pitch)| below this is treated as gimbal lock


def canonical_quaternion(q: Tensor) -> Tensor:
    """Unit quaternion (xyzw) with ``qw >= 0``: q and -q are the same rotation; labels need one of them."""
    norm = q.norm(dim=-1, keepdim=True)
    if bool((norm < 1e-8).any()):
        raise InvalidActionError("quaternion with zero norm")
    q = q / norm
    return torch.where(q[..., 3:4] < 0, -q, q)


def quaternion_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product ``a * b`` of xyzw quaternions (apply b first, then a)."""
    ax, ay, az, aw = a.unbind(-1)
    bx, by, bz, bw = b.unbind(-1)
    return torch.stack(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ],
        dim=-1,
    )


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """(..., 4) xyzw quaternions (normalised here) -> (..., 3, 3) rotation matrices."""
    q = q / q.norm(dim=-1, keepdim=True)
    x, y, z, w = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)  # fmt: skip


def matrix_to_euler_xyz(m: Tensor) -> Tensor:
    """(..., 3, 3) rotation -> (..., 3) extrinsic xyz Euler angles (a, b, c) in radians, R = Rz(c)Ry(b)Rx(a).

    a, c in (-pi, pi], b in [-pi/2, pi/2]. At gimbal lock c = 0 (see module docstring).
    """
    b = torch.asin((-m[..., 2, 0]).clamp(-1.0, 1.0))
    a = torch.atan2(m[..., 2, 1], m[..., 2, 2])
    c = torch.atan2(m[..., 1, 0], m[..., 0, 0])
    locked = torch.cos(b).abs() < _GIMBAL_EPS
    a_locked = torch.atan2(-m[..., 1, 2], m[..., 1, 1])
    a = torch.where(locked, a_locked, a)
    c = torch.where(locked, torch.zeros_like(c), c)
    return torch.stack([a, b, c], dim=-1)


def _axis_quaternion(angle: Tensor, axis: int) -> Tensor:
    half = angle / 2
    parts = [torch.zeros_like(half)] * 3 + [torch.cos(half)]
    parts[axis] = torch.sin(half)
    return torch.stack(parts, dim=-1)


def euler_xyz_to_quaternion(euler: Tensor) -> Tensor:
    """(..., 3) extrinsic xyz Euler angles (radians) -> canonical (..., 4) xyzw quaternions."""
    qx = _axis_quaternion(euler[..., 0], 0)
    qy = _axis_quaternion(euler[..., 1], 1)
    qz = _axis_quaternion(euler[..., 2], 2)
    q = quaternion_multiply(qz, quaternion_multiply(qy, qx))
    return torch.where(q[..., 3:4] < 0, -q, q)


def yaw_quaternion(yaw: Tensor) -> Tensor:
    """(...,) angles about world z (radians) -> (..., 4) xyzw quaternions."""
    return _axis_quaternion(yaw, 2)


def quaternion_to_rotation_bins(q: Tensor, bins: int) -> Tensor:
    """(..., 4) xyzw -> (..., 3) long Euler bins in [0, bins)."""
    res = 360.0 / bins
    deg = torch.rad2deg(matrix_to_euler_xyz(quaternion_to_matrix(canonical_quaternion(q))))
    return (torch.round((deg + 180.0) / res).long()) % bins


def rotation_bins_to_quaternion(rotation_bins: Tensor, bins: int) -> Tensor:
    """(..., 3) Euler bins -> canonical (..., 4) xyzw unit quaternions."""
    res = 360.0 / bins
    deg = rotation_bins.to(torch.float64) * res - 180.0
    return euler_xyz_to_quaternion(torch.deg2rad(deg))


def quaternion_angle_deg(q1: Tensor, q2: Tensor) -> Tensor:
    """Geodesic angle (degrees) between two batches of unit quaternions."""
    dot = (q1 / q1.norm(dim=-1, keepdim=True) * q2 / q2.norm(dim=-1, keepdim=True)).sum(-1).abs()
    return torch.rad2deg(2 * torch.acos(dot.clamp(max=1.0)))


@dataclass
class ActionLabels:
    """Training targets of one batch of keyframe actions."""

    position: Tensor  # (B, 3) world metres
    quaternion: Tensor  # (B, 4) canonical xyzw
    rotation_bins: Tensor  # (B, 3) long
    gripper_open: Tensor  # (B,) long, 1 = open
    ignore_collisions: Tensor  # (B,) long, 1 = ignore


def validate_action_vectors(action: Tensor) -> None:
    """Raise :class:`InvalidActionError` unless ``action`` is a finite (B, 9) batch with unit quaternions."""
    if action.dim() != 2 or action.shape[1] != ACTION_SIZE:
        raise InvalidActionError(f"actions must have shape (B, {ACTION_SIZE}), got {tuple(action.shape)}")
    if not bool(torch.isfinite(action).all()):
        raise InvalidActionError("action contains NaN or infinity")
    norms = action[:, 3:7].norm(dim=-1)
    if bool(((norms - 1.0).abs() > QUATERNION_NORM_TOLERANCE).any()):
        raise InvalidActionError(f"quaternion norms {norms.tolist()} are not 1 (xyzw order expected)")


def action_to_labels(action: Tensor, bins: int) -> ActionLabels:
    """(B, 9) RLBench action vectors -> :class:`ActionLabels`."""
    validate_action_vectors(action)
    q = canonical_quaternion(action[:, 3:7])
    return ActionLabels(
        position=action[:, :3],
        quaternion=q,
        rotation_bins=quaternion_to_rotation_bins(q.to(torch.float64), bins),
        gripper_open=(action[:, 7] > 0.5).long(),
        ignore_collisions=(action[:, 8] > 0.5).long(),
    )


def labels_to_action(
    position: Tensor, rotation_bins: Tensor, gripper_open: Tensor, ignore_collisions: Tensor, bins: int
) -> Tensor:
    """Decoded tokens -> (B, 9) RLBench action vectors (float32, unit quaternion with qw >= 0)."""
    q = rotation_bins_to_quaternion(rotation_bins, bins).to(position.dtype)
    return torch.cat(
        [
            position,
            q,
            gripper_open.to(position.dtype).unsqueeze(-1),
            ignore_collisions.to(position.dtype).unsqueeze(-1),
        ],
        dim=-1,
    )


def rotation_bin_to_degrees(rotation_bins: Tensor, bins: int) -> Tensor:
    """Bin index -> Euler angle in degrees (``bin * res - 180``)."""
    return rotation_bins.to(torch.float64) * (360.0 / bins) - 180.0


__all__ = [
    "ACTION_SIZE",
    "ActionLabels",
    "action_to_labels",
    "canonical_quaternion",
    "euler_xyz_to_quaternion",
    "labels_to_action",
    "matrix_to_euler_xyz",
    "quaternion_angle_deg",
    "quaternion_multiply",
    "quaternion_to_matrix",
    "quaternion_to_rotation_bins",
    "rotation_bin_to_degrees",
    "rotation_bins_to_quaternion",
    "validate_action_vectors",
    "yaw_quaternion",
]
