"""Observations -> ARP batch tensors, and the checks that keep malformed input out of the model.

A *sample* is one observation as tensors:

* ``points`` (N, 3) float32 world-frame points of the configured cameras (RLBench's point clouds, every
  ``point_stride``-th pixel), N = cameras x (128 / stride)^2; cropping to the scene bounds happens in the
  renderer so that every sample of a batch has the same N;
* ``rgb`` (N, 3) float32 colours in [0, 1];
* ``low_dim_state`` (4,) = ``[gripper_open, finger_1, finger_2, time]`` (PerAct / RVT layout; fingers
  clipped to [0, 0.04] m, ``time = (1 - step / (episode_length - 1)) * 2 - 1`` for keyframe step ``step``).

A *batch* stacks samples and adds the language: ``lang`` (B, L, lang_dim) token features from a frozen
text encoder and ``lang_mask`` (B, L) bool, plus ``action`` (B, 9) for training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from mirror_common.errors import MirrorError
from mirror_policy.arp.configuration import ARPConfig
from sim_bridge.actions import MAX_KEYFRAMES
from sim_bridge.observation import CameraFrame, Observation

FINGER_MAX = 0.04  # Panda finger joint range, metres


class PolicyInputError(MirrorError, ValueError):
    """An observation or batch that the ARP policy cannot use (missing camera, wrong size, bad shape)."""


def time_feature(step: int, episode_length: int = MAX_KEYFRAMES) -> float:
    """PerAct's time channel: +1 at the first keyframe step, -1 at the last allowed one."""
    if episode_length < 2:
        raise PolicyInputError(f"episode_length must be >= 2, got {episode_length}")
    if not 0 <= step < episode_length:
        raise PolicyInputError(f"keyframe step {step} outside [0, {episode_length})")
    return (1.0 - step / (episode_length - 1)) * 2.0 - 1.0


def low_dim_state(observation: Observation, step: int, episode_length: int = MAX_KEYFRAMES) -> np.ndarray:
    """``[gripper_open, finger_1, finger_2, time]`` as float32."""
    fingers = np.asarray(observation.gripper_joint_positions, dtype=np.float64).reshape(-1)
    if fingers.size != 2:
        raise PolicyInputError(f"gripper_joint_positions must hold 2 values, got {fingers.size}")
    fingers = np.clip(fingers, 0.0, FINGER_MAX)
    return np.array(
        [float(observation.gripper_open), fingers[0], fingers[1], time_feature(step, episode_length)],
        dtype=np.float32,
    )


def _camera_arrays(name: str, frame: CameraFrame, config: ARPConfig) -> tuple[np.ndarray, np.ndarray]:
    size = config.camera_resolution
    rgb, depth = np.asarray(frame.rgb), np.asarray(frame.depth)
    if rgb.shape != (size, size, 3):
        raise PolicyInputError(f"camera {name!r}: RGB must be ({size}, {size}, 3), got {rgb.shape}")
    if depth.shape != (size, size):
        raise PolicyInputError(f"camera {name!r}: depth must be ({size}, {size}), got {depth.shape}")
    if np.asarray(frame.intrinsics).shape != (3, 3) or np.asarray(frame.extrinsics).shape != (4, 4):
        raise PolicyInputError(f"camera {name!r}: intrinsics must be 3x3 and extrinsics 4x4")
    if rgb.dtype == np.uint8:
        colours = rgb.astype(np.float32) / 255.0
    elif np.issubdtype(rgb.dtype, np.floating) and np.nanmin(rgb) >= 0.0 and np.nanmax(rgb) <= 1.0:
        colours = rgb.astype(np.float32)
    else:
        raise PolicyInputError(f"camera {name!r}: RGB must be uint8 or float in [0, 1], got {rgb.dtype}")
    points = frame.point_cloud().astype(np.float32)
    s = config.point_stride
    return points[::s, ::s].reshape(-1, 3), colours[::s, ::s].reshape(-1, 3)


def observation_to_sample(
    observation: Observation, config: ARPConfig, step: int, episode_length: int = MAX_KEYFRAMES
) -> dict[str, Tensor]:
    """One observation -> ``{"points", "rgb", "low_dim_state"}`` tensors (see module docstring)."""
    missing = [name for name in config.cameras if name not in observation.cameras]
    if missing:
        raise PolicyInputError(f"observation lacks cameras {missing}; it has {sorted(observation.cameras)}")
    points, colours = zip(*(_camera_arrays(n, observation.cameras[n], config) for n in config.cameras))
    return {
        "points": torch.from_numpy(np.concatenate(points)),
        "rgb": torch.from_numpy(np.concatenate(colours)),
        "low_dim_state": torch.from_numpy(low_dim_state(observation, step, episode_length)),
    }


def collate(
    samples: Sequence[dict[str, Tensor]], lang: Tensor, lang_mask: Tensor, action: Tensor | None = None
) -> dict[str, Tensor]:
    """Stack samples and attach language (and actions for training) into one batch."""
    if not samples:
        raise PolicyInputError("cannot collate an empty list of samples")
    sizes = {s["points"].shape[0] for s in samples}
    if len(sizes) != 1:
        raise PolicyInputError(f"samples have different point counts {sorted(sizes)} (mixed camera configs?)")
    batch = {key: torch.stack([s[key] for s in samples]) for key in ("points", "rgb", "low_dim_state")}
    batch["lang"] = lang
    batch["lang_mask"] = lang_mask
    if action is not None:
        batch["action"] = action
    return batch


def make_batch(
    observations: Sequence[Observation],
    config: ARPConfig,
    lang: Tensor,
    lang_mask: Tensor,
    steps: Sequence[int],
    action: Tensor | None = None,
    episode_length: int = MAX_KEYFRAMES,
) -> dict[str, Tensor]:
    """Observations (+ language, keyframe steps, optional actions) -> a validated batch."""
    if len(steps) != len(observations):
        raise PolicyInputError(f"{len(observations)} observations but {len(steps)} keyframe steps")
    samples = [observation_to_sample(o, config, t, episode_length) for o, t in zip(observations, steps)]
    batch = collate(samples, lang, lang_mask, action)
    validate_batch(batch, config, require_action=action is not None)
    return batch


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise PolicyInputError(message)


def validate_batch(batch: dict[str, Tensor], config: ARPConfig, require_action: bool) -> None:
    """Raise :class:`PolicyInputError` unless ``batch`` has every key with consistent shapes and dtypes."""
    keys = ["points", "rgb", "low_dim_state", "lang", "lang_mask"] + (["action"] if require_action else [])
    missing = [k for k in keys if k not in batch]
    _need(not missing, f"batch lacks keys {missing}")
    for k in keys:
        _need(
            isinstance(batch[k], Tensor),
            f"batch[{k!r}] must be a torch.Tensor, got {type(batch[k]).__name__}",
        )
    points, rgb, state = batch["points"], batch["rgb"], batch["low_dim_state"]
    lang, mask = batch["lang"], batch["lang_mask"]
    _need(points.dim() == 3 and points.shape[-1] == 3 and points.shape[1] > 0,
          f"points must be (B, N>0, 3), got {tuple(points.shape)}")  # fmt: skip
    B = points.shape[0]
    _need(B > 0, "batch is empty")
    _need(rgb.shape == points.shape, f"rgb must match points {tuple(points.shape)}, got {tuple(rgb.shape)}")
    _need(points.is_floating_point() and rgb.is_floating_point(), "points and rgb must be floating point")
    _need(state.shape == (B, config.proprio_dim),
          f"low_dim_state must be ({B}, {config.proprio_dim}), got {tuple(state.shape)}")  # fmt: skip
    _need(bool(torch.isfinite(state).all()), "low_dim_state contains NaN or infinity")
    _need(lang.dim() == 3 and lang.shape[0] == B and lang.shape[2] == config.lang_dim,
          f"lang must be ({B}, L, {config.lang_dim}), got {tuple(lang.shape)}")  # fmt: skip
    _need(1 <= lang.shape[1] <= config.max_lang_len,
          f"lang length {lang.shape[1]} outside [1, {config.max_lang_len}]")  # fmt: skip
    _need(bool(torch.isfinite(lang).all()), "lang contains NaN or infinity")
    _need(mask.shape == lang.shape[:2], f"lang_mask must be {tuple(lang.shape[:2])}, got {tuple(mask.shape)}")
    _need(mask.dtype == torch.bool or not mask.is_floating_point(), "lang_mask must be bool (True = token)")
    if require_action:
        action = batch["action"]
        _need(action.shape == (B, 9), f"action must be ({B}, 9), got {tuple(action.shape)}")
