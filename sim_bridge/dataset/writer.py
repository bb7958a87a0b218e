"""Atomic writing of one RLBench/PerAct episode folder.

An episode is written into a hidden temporary sibling (``.episode<N>.tmp-<pid>-<token>``) and renamed to
``episode<N>`` only once every file is on disk, so a folder with an episode name is always complete and an
interrupted write (exception, Ctrl-C, killed process) leaves at most a temporary folder that no reader lists.
Temporary folders of dead processes are removed by the next write into the same ``episodes`` folder; those
of live processes are left alone, so several generators may write into one folder at once. Files are not
fsynced: the guarantee covers interrupted processes, not power loss.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sim_bridge.dataset import codec
from sim_bridge.dataset.layout import (
    LOW_DIM_PICKLE,
    VARIATION_DESCRIPTIONS,
    VARIATION_NUMBER,
    camera_folders,
    episode_number,
    frame_file,
    frame_files,
    image_folder,
)
from sim_bridge.dataset.pickles import build_demo, demo_to_bytes, dump_descriptions, dump_variation_number
from sim_bridge.errors import DatasetError
from sim_bridge.observation import Observation

log = logging.getLogger(__name__)

_TEMP_NAME = re.compile(r"\.(episode\d+)\.tmp-(\d+)-([0-9a-f]+)")
_active_temp_dirs: set[str] = set()
_active_lock = threading.Lock()


def write_episode(
    episode_dir: Path,
    observations: Sequence[Observation],
    descriptions: Sequence[str],
    variation: int,
    random_seed: Any = None,
) -> None:
    """Write ``episode_dir`` (named ``episode<N>``) in PerAct's layout: ``{cam}_{rgb,depth,mask}/<i>.png`` for
    the cameras of the observations, ``low_dim_obs.pkl``, ``variation_descriptions.pkl`` and
    ``variation_number.pkl``. Refuses to overwrite an existing episode."""
    episode_dir = Path(episode_dir)
    cameras = _validate(episode_dir, observations, descriptions, variation)
    demo_bytes = demo_to_bytes(build_demo(observations, random_seed))  # fail on bad low-dim data before I/O

    episodes_dir = episode_dir.parent
    episodes_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_dirs(episodes_dir)
    if episode_dir.exists():
        raise DatasetError(f"{episode_dir} already exists; episodes are never overwritten")

    temp_dir = episodes_dir / f".{episode_dir.name}.tmp-{os.getpid()}-{secrets.token_hex(6)}"
    with _active_lock:
        _active_temp_dirs.add(temp_dir.name)
    try:
        temp_dir.mkdir()
        _write_images(temp_dir, observations, cameras)
        (temp_dir / LOW_DIM_PICKLE).write_bytes(demo_bytes)
        dump_descriptions(temp_dir / VARIATION_DESCRIPTIONS, descriptions)
        dump_variation_number(temp_dir / VARIATION_NUMBER, variation)
        try:
            os.rename(temp_dir, episode_dir)  # atomic; fails if a non-empty episode_dir appeared meanwhile
        except OSError as exc:
            raise DatasetError(f"cannot move the finished episode to {episode_dir}: {exc}") from exc
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    finally:
        with _active_lock:
            _active_temp_dirs.discard(temp_dir.name)


def _validate(
    episode_dir: Path, observations: Sequence[Observation], descriptions: Sequence[str], variation: int
) -> list[str]:
    if episode_number(episode_dir.name) is None:
        raise DatasetError(f"episode folder must be called episode<N>, got {episode_dir.name!r}")
    if isinstance(descriptions, str) or not descriptions or not all(isinstance(d, str) for d in descriptions):
        raise DatasetError("descriptions must be a non-empty list of str (element 0 is the canonical one)")
    if not isinstance(variation, (int, np.integer)) or isinstance(variation, bool) or variation < 0:
        raise DatasetError(f"variation must be a non-negative int, got {variation!r}")
    if not observations:
        raise DatasetError("an episode needs at least one observation")
    cameras = list(observations[0].cameras)
    for i, obs in enumerate(observations):
        if not isinstance(obs, Observation):
            raise DatasetError(f"frame {i} is a {type(obs).__name__}, not a sim_bridge Observation")
        if set(obs.cameras) != set(cameras):
            raise DatasetError(f"frame {i} has cameras {sorted(obs.cameras)}, frame 0 has {sorted(cameras)}")
        for name, frame in obs.cameras.items():
            _validate_frame_shapes(name, i, frame.rgb, frame.depth, frame.mask, frame.intrinsics)
    return cameras


def _validate_frame_shapes(
    camera: str, index: int, rgb: np.ndarray, depth: np.ndarray, mask: np.ndarray, intrinsics: np.ndarray
) -> None:
    hw = codec.image_size_from_intrinsics(intrinsics)
    shapes = {"rgb": np.shape(rgb)[:2], "depth": np.shape(depth), "mask": np.shape(mask)}
    wrong = {k: s for k, s in shapes.items() if tuple(s) != hw}
    if wrong or np.ndim(rgb) != 3:
        raise DatasetError(
            f"frame {index} camera {camera}: image shapes {shapes} do not match the {hw[0]}x{hw[1]} image "
            "implied by its intrinsics (principal point at the image centre)"
        )


def _write_images(episode_dir: Path, observations: Sequence[Observation], cameras: list[str]) -> None:
    for camera in cameras:
        for kind in ("rgb", "depth", "mask"):
            (episode_dir / image_folder(camera, kind)).mkdir()
    for i, obs in enumerate(observations):
        for camera in cameras:
            frame = obs.cameras[camera]
            name = frame_file(i)
            try:
                depth_rgb = codec.encode_depth(frame.depth, frame.near, frame.far)
                mask_rgb = codec.encode_mask(frame.mask)
            except DatasetError as exc:
                raise DatasetError(f"frame {i} camera {camera}: {exc}") from exc
            codec.write_png(episode_dir / image_folder(camera, "rgb") / name, np.asarray(frame.rgb))
            codec.write_png(episode_dir / image_folder(camera, "depth") / name, depth_rgb)
            codec.write_png(episode_dir / image_folder(camera, "mask") / name, mask_rgb)


def is_complete_episode(path: Path) -> bool:
    """True for an ``episode<N>`` folder with its pickles (descriptions in the episode, as PerAct writes them,
    or in the ``variation<V>`` folder above, as upstream RLBench does) and the same number of frames in
    every image folder. Only names and listings are checked; nothing is decoded."""
    path = Path(path)
    if not path.is_dir() or episode_number(path.name) is None or not (path / LOW_DIM_PICKLE).is_file():
        return False
    peract = (path / VARIATION_DESCRIPTIONS).is_file() and (path / VARIATION_NUMBER).is_file()
    upstream = (path.parent.parent / VARIATION_DESCRIPTIONS).is_file()
    if not (peract or upstream):
        return False
    counts = {
        len(frame_files(path / image_folder(camera, kind)))
        for camera, kinds in camera_folders(path).items()
        for kind in kinds
    }
    return len(counts) <= 1


def next_episode_index(episodes_dir: Path) -> int:
    """One past the highest ``episode<N>`` in ``episodes_dir`` (complete or not, so the name is free), 0 if
    there is none or the folder does not exist yet."""
    episodes_dir = Path(episodes_dir)
    if not episodes_dir.is_dir():
        return 0
    numbers = [n for p in episodes_dir.iterdir() if (n := episode_number(p.name)) is not None]
    return max(numbers, default=-1) + 1


def remove_stale_temp_dirs(episodes_dir: Path) -> list[Path]:
    """Delete temporary episode folders left by interrupted writes; returns what was removed."""
    removed = []
    for child in Path(episodes_dir).iterdir():
        m = _TEMP_NAME.fullmatch(child.name)
        if m is None or not child.is_dir():
            continue
        pid = int(m.group(2))
        with _active_lock:
            stale = child.name not in _active_temp_dirs if pid == os.getpid() else not _process_alive(pid)
        if stale:
            shutil.rmtree(child, ignore_errors=True)
            log.info("removed %s, left by an interrupted episode write", child)
            removed.append(child)
    return removed


def _process_alive(pid: int) -> bool:
    if os.name != "posix":  # no harmless liveness probe elsewhere: only our own leftovers are removed
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True
