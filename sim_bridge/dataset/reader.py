"""Reading RLBench/PerAct datasets into :class:`sim_bridge.observation.Observation` objects.

Two layouts are discovered (research/rlbench.md section 1):

* PerAct: ``<root>/<task>/all_variations/episodes/episode<N>/`` with ``variation_descriptions.pkl`` and
  ``variation_number.pkl`` inside each episode;
* upstream RLBench: ``<root>/<task>/variation<V>/episodes/episode<N>/`` with ``variation_descriptions.pkl`` in
  ``variation<V>`` and the variation taken from the folder name.

Loading decodes only the requested frames and cameras; the low-dim pickle is always read whole because it is
a single object. Depth is converted to metres with each frame's own near/far from ``misc``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim_bridge.cameras import CAMERA_NAMES, calibration_from_misc, calibration_keys
from sim_bridge.dataset import codec
from sim_bridge.dataset.layout import (
    ALL_VARIATIONS_FOLDER,
    EPISODES_FOLDER,
    LOW_DIM_PICKLE,
    VARIATION_DESCRIPTIONS,
    VARIATION_NUMBER,
    camera_folders,
    episode_number,
    frame_file,
    frame_files,
    image_folder,
    variation_number_from_name,
)
from sim_bridge.dataset.pickles import (
    PickledObservation,
    load_demo,
    load_descriptions,
    load_variation_number,
)
from sim_bridge.errors import DatasetError
from sim_bridge.observation import CameraFrame, Observation

log = logging.getLogger(__name__)

PERACT_LAYOUT = "peract"
UPSTREAM_LAYOUT = "upstream"
# Optional RLBench fields that an ObservationConfig may switch off (stored as None): read as empty vectors.
_OPTIONAL_VECTORS = ("joint_forces", "gripper_joint_positions", "gripper_touch_forces", "task_low_dim_state")
_REQUIRED_VECTORS = ("joint_positions", "joint_velocities", "gripper_pose")


@dataclass(frozen=True)
class EpisodeRecord:
    """One episode found on disk. ``length`` is the number of frames in its image folders (counted, not
    decoded); :func:`load_episode` checks it against the demo."""

    task: str
    variation: int
    descriptions: tuple[str, ...]
    path: Path
    length: int
    index: int = 0
    layout: str = PERACT_LAYOUT


@dataclass
class Episode:
    """Loaded frames of an episode. ``frame_indices[k]`` is the demo index of ``observations[k]``."""

    task: str
    variation: int
    descriptions: list[str]
    random_seed: Any
    path: Path
    length: int
    frame_indices: list[int]
    observations: list[Observation] = field(repr=False)

    def __len__(self) -> int:
        return len(self.observations)


def describe_episode(path: Path) -> EpisodeRecord:
    """Build the record of an episode folder in either layout, naming the first file that is missing."""
    path = Path(path)
    index = episode_number(path.name)
    if not path.is_dir():
        raise DatasetError(f"episode folder {path} does not exist")
    if index is None:
        raise DatasetError(f"{path} is not an episode folder (expected a name like episode0)")
    if not (path / LOW_DIM_PICKLE).is_file():
        raise DatasetError(f"{path} has no {LOW_DIM_PICKLE}")
    variation_dir = path.parent.parent
    task = variation_dir.parent.name
    if (path / VARIATION_NUMBER).is_file():
        variation = load_variation_number(path / VARIATION_NUMBER)
        descriptions = _descriptions_or_none(path / VARIATION_DESCRIPTIONS)
        layout = PERACT_LAYOUT
    elif (upstream_variation := variation_number_from_name(variation_dir.name)) is not None:
        variation = upstream_variation
        local = path / VARIATION_DESCRIPTIONS
        descriptions = _descriptions_or_none(
            local if local.is_file() else variation_dir / VARIATION_DESCRIPTIONS
        )
        layout = UPSTREAM_LAYOUT
    else:
        raise DatasetError(
            f"{path} has no {VARIATION_NUMBER} and is not inside a variation<V> folder, so its variation "
            "is unknown"
        )
    return EpisodeRecord(task, variation, tuple(descriptions), path, _count_frames(path), index, layout)


def _descriptions_or_none(path: Path) -> list[str]:
    """The episode's instructions, or none (with a warning) when the file is missing or malformed: RLBench
    never reads it, so the rest of the episode stays usable; whoever needs instructions (training) skips
    the episode and says why."""
    try:
        return load_descriptions(path)
    except DatasetError as exc:
        log.warning("%s; the episode is kept without instructions", exc)
        return []


def _count_frames(path: Path) -> int:
    folders = camera_folders(path)
    for camera in sorted(folders):
        if "rgb" in folders[camera]:
            return len(frame_files(path / image_folder(camera, "rgb")))
    return len(load_demo(path / LOW_DIM_PICKLE))  # a low-dim-only episode


class RLBenchDataset:
    """All episodes under ``root`` (a split folder holding ``<task>/...``), sorted by task, variation
    folder and episode number. Episodes with missing files or an unreadable variation number are skipped
    with a warning and listed in ``skipped`` (missing or malformed descriptions only leave the episode
    without instructions); a missing root, or one without any usable episode, is a :class:`DatasetError`
    that says how many were skipped and why."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"dataset root {self.root} does not exist or is not a folder")
        self.skipped: list[tuple[Path, str]] = []
        self.records: list[EpisodeRecord] = [r for d in self._episode_dirs() if (r := self._record(d))]
        if self.skipped and not self.records:
            raise DatasetError(
                f"all {len(self.skipped)} episode folder(s) under {self.root} were skipped; first reasons: "
                + "; ".join(f"{path.name}: {reason}" for path, reason in self.skipped[:3])
            )
        if not self.records:
            raise DatasetError(
                f"no episodes under {self.root}: expected <task>/{ALL_VARIATIONS_FOLDER}/{EPISODES_FOLDER}/"
                f"episode<N> or <task>/variation<V>/{EPISODES_FOLDER}/episode<N>"
            )

    def _episode_dirs(self) -> Iterator[Path]:
        for task_dir in _sorted_dirs(self.root):
            for variation_dir in _sorted_dirs(task_dir):
                is_variation = variation_number_from_name(variation_dir.name) is not None
                if variation_dir.name != ALL_VARIATIONS_FOLDER and not is_variation:
                    continue
                episodes = variation_dir / EPISODES_FOLDER
                if episodes.is_dir():
                    found = [
                        p for p in episodes.iterdir() if p.is_dir() and episode_number(p.name) is not None
                    ]
                    yield from sorted(found, key=lambda p: episode_number(p.name))

    def _record(self, path: Path) -> EpisodeRecord | None:
        try:
            return describe_episode(path)
        except DatasetError as exc:
            log.warning("skipping episode %s: %s", path, exc)
            self.skipped.append((path, str(exc)))
            return None

    @property
    def tasks(self) -> list[str]:
        return sorted({r.task for r in self.records})

    def episodes(self, task: str | None = None, variation: int | None = None) -> list[EpisodeRecord]:
        """Records, optionally of one task and/or one variation."""
        if task is not None and task not in self.tasks:
            raise DatasetError(f"task {task!r} is not in {self.root}; it has {self.tasks}")
        return [
            r for r in self.records if (task is None or r.task == task) and (variation in (None, r.variation))
        ]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[EpisodeRecord]:
        return iter(self.records)

    def __getitem__(self, index: int) -> EpisodeRecord:
        return self.records[index]

    def load(
        self, index: int, cameras: Sequence[str] = CAMERA_NAMES, frames: Iterable[int] | None = None
    ) -> Episode:
        return load_episode(self.records[index], cameras=cameras, frames=frames)


def _sorted_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_episode(
    record_or_path: EpisodeRecord | Path | str,
    cameras: Sequence[str] = CAMERA_NAMES,
    frames: Iterable[int] | None = None,
) -> Episode:
    """Load the given frames (default: all, in order) with the given cameras (possibly none)."""
    record = (
        record_or_path
        if isinstance(record_or_path, EpisodeRecord)
        else describe_episode(Path(record_or_path))
    )
    path = record.path
    if isinstance(cameras, str):
        raise DatasetError(f"cameras must be a sequence of names, got the string {cameras!r}")
    demo = load_demo(path / LOW_DIM_PICKLE)
    length = len(demo)
    indices = _frame_indices(frames, length, path)
    _check_cameras(path, list(cameras), length)
    observations = [_load_observation(path, i, demo[i], cameras) for i in indices]
    return Episode(
        task=record.task,
        variation=record.variation,
        descriptions=list(record.descriptions),
        random_seed=getattr(demo, "random_seed", None),
        path=path,
        length=length,
        frame_indices=indices,
        observations=observations,
    )


def _frame_indices(frames: Iterable[int] | None, length: int, path: Path) -> list[int]:
    if frames is None:
        return list(range(length))
    indices = [int(i) for i in frames]
    bad = [i for i in indices if not 0 <= i < length]
    if bad:
        raise DatasetError(f"{path}: frames {bad} are outside the demo's 0..{length - 1}")
    return indices


def _check_cameras(path: Path, cameras: list[str], length: int) -> None:
    available = camera_folders(path)
    for camera in cameras:
        if camera not in available:
            raise DatasetError(f"unknown camera {camera!r} for {path}; it has {sorted(available)}")
        for kind in ("rgb", "depth", "mask"):
            if kind not in available[camera]:
                raise DatasetError(f"{path} has no {image_folder(camera, kind)} folder")
            count = len(frame_files(path / image_folder(camera, kind)))
            if count != length:
                raise DatasetError(
                    f"{path / image_folder(camera, kind)} has {count} images but the demo has {length} frames"
                )


def _load_observation(
    path: Path, index: int, pobs: PickledObservation, cameras: Sequence[str]
) -> Observation:
    where = f"{path}: frame {index}"
    misc = getattr(pobs, "misc", None)
    if misc is None and cameras:
        raise DatasetError(f"{where} has no misc, so its camera calibration is unknown")
    if misc is not None and not isinstance(misc, dict):
        raise DatasetError(f"{where} misc is a {type(misc).__name__}, not a dict")
    misc = dict(misc or {})
    frames = {camera: _load_camera_frame(path, index, camera, misc) for camera in cameras}
    loaded_keys = calibration_keys(cameras)
    values: dict[str, Any] = {}
    for name in (*_REQUIRED_VECTORS, *_OPTIONAL_VECTORS):
        value = getattr(pobs, name, None)
        if value is None and name in _REQUIRED_VECTORS:
            raise DatasetError(f"{where} has no {name}")
        values[name] = np.zeros(0) if value is None else _vector(value, name, where)
    if values["gripper_pose"].shape != (7,):
        raise DatasetError(f"{where} gripper_pose has {values['gripper_pose'].size} values, not 7")
    if getattr(pobs, "gripper_open", None) is None:
        raise DatasetError(f"{where} has no gripper_open")
    values["gripper_open"] = _scalar(pobs.gripper_open, "gripper_open", where)
    ignore_collisions = getattr(pobs, "ignore_collisions", None)  # absent in upstream pickles
    if ignore_collisions is not None:
        values["ignore_collisions"] = _scalar(ignore_collisions, "ignore_collisions", where)
    return Observation(
        cameras=frames, extra_misc={k: v for k, v in misc.items() if k not in loaded_keys}, **values
    )


def _vector(value: Any, name: str, where: str) -> np.ndarray:
    try:
        return np.array(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{where} {name} is not numeric: {exc}") from exc


def _scalar(value: Any, name: str, where: str) -> float:
    flat = _vector(value, name, where)
    if flat.shape != (1,):
        raise DatasetError(f"{where} {name} should be one number, got shape {np.shape(value)}")
    return float(flat[0])


def _load_camera_frame(path: Path, index: int, camera: str, misc: dict[str, Any]) -> CameraFrame:
    calibration = calibration_from_misc(misc, camera, DatasetError, f"{path}: frame {index}")
    intrinsics, extrinsics = calibration.intrinsics, calibration.extrinsics
    near, far = calibration.near, calibration.far
    hw = codec.image_size_from_intrinsics(intrinsics)
    name = frame_file(index)
    rgb = codec.read_png(path / image_folder(camera, "rgb") / name, hw)
    depth = codec.decode_depth(codec.read_png(path / image_folder(camera, "depth") / name, hw), near, far)
    mask = codec.decode_mask(codec.read_png(path / image_folder(camera, "mask") / name, hw))
    return CameraFrame(
        rgb=rgb, depth=depth, mask=mask, intrinsics=intrinsics, extrinsics=extrinsics, near=near, far=far
    )
