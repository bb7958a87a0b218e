"""Training data of the mirror model, read from an RLBench/PerAct-layout dataset.

* **EE samples** (ARP): keyframe transitions ``observation at frame i -> action at keyframe k`` formed as
  PerAct does (research/rlbench.md section 5): from every ``every_n``-th start frame a chain
  ``obs(i) -> kf1, obs(kf1) -> kf2, ...`` over the keyframes after ``i``, with the chain position as the
  keyframe step of the time feature; so keyframe-to-keyframe transitions repeat once per earlier start frame
  (ARP's Download.md trims this; ``keyframes`` mode keeps frame 0 and keyframes only, each transition once).
  Target = gripper pose at ``k`` (unit quaternion with qw >= 0), gripper_open at ``k``, ignore_collisions at
  ``k - 1``.
* **AU samples** (ViCLIP): an episode's video from ``data.video_camera``, ``clip_frames`` frames by segment
  sampling (random frame per segment in training, middle frame for evaluation), with its instruction.
* **Pairs**: each step draws AU episodes (uniform task, then uniform episode, as ARP samples) and pairs each
  clip with an EE transition of the same key (instruction / episode / task; paper Sec. 4.5) via
  :func:`mirror.alignment.pair_by_key`.

All randomness of step ``s`` on rank ``r`` comes from generators seeded with ``(seed, stream, r, s)``: the
batch of a step does not depend on what ran before, which makes resuming exact and gives each rank its own
samples (the with-replacement analogue of a DistributedSampler).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mirror.alignment import index_by_key, key_function, pair_by_key
from mirror_perception.clip_sampling import sample_clip_indices
from mirror_perception.demonstration import demonstration_clip_indices
from mirror_policy.arp.augmentation import augment_batch
from mirror_policy.arp.configuration import ARPConfig
from mirror_policy.arp.preprocessing import PolicyInputError, observation_to_sample
from sim_bridge.actions import MAX_KEYFRAMES
from sim_bridge.dataset import EpisodeRecord, RLBenchDataset, discover_keyframes, load_episode, read_png
from sim_bridge.dataset.layout import frame_file, image_folder
from sim_bridge.errors import DatasetError

log = logging.getLogger(__name__)

# Independent random streams, so e.g. the AU-step draw never shifts the data draw.
STREAM_DATA = 1
STREAM_AU_STEP = 2
STREAM_AUGMENT = 3
STREAM_MODEL = 4
STREAM_EVAL = 5
STREAM_VIDEO = 6  # ViCLIP's token masking / stochastic depth (it runs on a thread of its own)


class TrainingDataError(DatasetError):
    """A dataset that cannot feed training: missing root, no usable episode, unknown task, bad split."""


def step_rng(seed: int, stream: int, step: int, rank: int = 0) -> np.random.Generator:
    """The numpy generator of one (stream, rank, step)."""
    return np.random.default_rng([int(seed), stream, int(rank), int(step)])


def step_seed(seed: int, stream: int, step: int, rank: int = 0) -> int:
    """A 63-bit torch seed of one (stream, rank, step)."""
    return int(step_rng(seed, stream, step, rank).integers(0, 2**63 - 1))


# ------------------------------------------------------------------------------------------- episodes
def record_instruction(record: EpisodeRecord, index: int = 0) -> str:
    """The instruction an episode is trained with: its description ``index`` (the last one when it has
    fewer), "" when it has none. Evaluation uses the same rule for episodes without a recorded one."""
    if not record.descriptions:
        return ""
    return record.descriptions[min(index, len(record.descriptions) - 1)]


class RecordIdentity:
    """Mixin for an object holding an episode's ``record``: the task, episode index and variation that
    identify (and pair) it."""

    record: EpisodeRecord

    @property
    def task(self) -> str:
        return self.record.task

    @property
    def episode(self) -> int:
        return self.record.index

    @property
    def variation(self) -> int:
        return self.record.variation


@dataclass(frozen=True, eq=False)
class EpisodeEntry(RecordIdentity):
    """One usable episode: identity, instruction, keyframes and the per-frame low-dim values that targets
    need (gripper pose (T, 7), gripper_open (T,), ignore_collisions (T,)); no images."""

    uid: int
    record: EpisodeRecord
    instruction: str
    keyframes: tuple[int, ...]
    gripper_pose: np.ndarray
    gripper_open: np.ndarray
    ignore_collisions: np.ndarray

    @property
    def length(self) -> int:
        return self.record.length


@dataclass(frozen=True)
class Transition:
    """One EE sample: observation frame -> target keyframe, with its keyframe step (time feature)."""

    entry: EpisodeEntry
    obs_frame: int
    target_frame: int
    step: int

    @property
    def task(self) -> str:
        return self.entry.task

    @property
    def episode(self) -> int:
        return self.entry.episode

    @property
    def instruction(self) -> str:
        return self.entry.instruction


def scan_episodes(
    root: str | Path, tasks: Sequence[str] = (), instruction_index: int = 0
) -> list[EpisodeEntry]:
    """Every usable episode under ``root`` (optionally of ``tasks`` only), with its keyframes."""
    if not str(root):
        raise TrainingDataError("no dataset given: pass --data <RLBench-layout root>")
    root = Path(root)
    if not root.is_dir():
        raise TrainingDataError(f"dataset root {root} does not exist or is not a folder")
    dataset = RLBenchDataset(root)
    missing = sorted(set(tasks) - set(dataset.tasks))
    if missing:
        raise TrainingDataError(f"tasks {missing} are not in {root}; it has {dataset.tasks}")
    entries: list[EpisodeEntry] = []
    skipped: list[str] = []

    def skip(record: EpisodeRecord, reason: str) -> None:
        log.warning("skipping %s: %s", record.path, reason)
        skipped.append(f"{record.task}/{record.path.name}: {reason}")

    for record in dataset.records:
        if tasks and record.task not in tasks:
            continue
        if not record.descriptions:
            skip(record, "it has no instructions (variation_descriptions.pkl missing or malformed)")
            continue
        episode = load_episode(record, cameras=[])
        keyframes = tuple(discover_keyframes(episode.observations))
        if not keyframes:
            skip(record, f"no keyframes ({len(episode.observations)} frames)")
            continue
        observations = episode.observations
        entries.append(
            EpisodeEntry(
                uid=len(entries),
                record=record,
                instruction=record_instruction(record, instruction_index),
                keyframes=keyframes,
                gripper_pose=np.stack([np.asarray(o.gripper_pose, dtype=np.float64) for o in observations]),
                gripper_open=np.array([float(o.gripper_open) for o in observations]),
                ignore_collisions=np.array([float(o.ignore_collisions) for o in observations]),
            )
        )
    if not entries:
        raise TrainingDataError(
            f"no usable episodes under {root}"
            + (f" for tasks {list(tasks)}" if tasks else "")
            + (f": {len(skipped)} skipped, first: {'; '.join(skipped[:3])}" if skipped else "")
        )
    return entries


def split_episodes(
    entries: Sequence[EpisodeEntry], holdout_fraction: float
) -> tuple[list[EpisodeEntry], list[EpisodeEntry]]:
    """Per task, hold out the ``ceil(fraction * n)`` episodes with the highest indices (at least one when the
    fraction is > 0 and the task has two or more episodes; never all of a task's episodes)."""
    train: list[EpisodeEntry] = []
    held_out: list[EpisodeEntry] = []
    for task in sorted({e.task for e in entries}):
        own = sorted((e for e in entries if e.task == task), key=lambda e: (e.episode, e.variation))
        count = int(np.ceil(holdout_fraction * len(own))) if holdout_fraction > 0 else 0
        count = min(count, len(own) - 1)
        train.extend(own[: len(own) - count])
        held_out.extend(own[len(own) - count :])
    if not train:
        raise TrainingDataError("the split left no training episodes")
    return train, held_out


def split_summary(train: Sequence[EpisodeEntry], held_out: Sequence[EpisodeEntry]) -> dict:
    """JSON-ready record of the split (written to the run directory)."""

    def rows(entries: Sequence[EpisodeEntry]) -> list[dict]:
        return [
            {
                "task": e.task,
                "episode": e.episode,
                "variation": e.variation,
                "instruction": e.instruction,
                "keyframes": list(e.keyframes),
                "path": str(e.record.path),
            }
            for e in entries
        ]

    return {"train": rows(train), "held_out": rows(held_out)}


def form_transitions(entry: EpisodeEntry, mode: str, every_n: int = 10) -> list[Transition]:
    """EE samples of one episode (see module doc for the two modes)."""
    keyframes = list(entry.keyframes)
    if mode == "keyframes":
        starts = [0]
    elif mode == "peract":
        starts = list(range(0, entry.length, every_n))
    else:
        raise ValueError(f"unknown sampling mode {mode!r}")
    out: list[Transition] = []
    for start in starts:
        chain = [k for k in keyframes if k > start]
        previous = start
        for position, keyframe in enumerate(chain):
            step = min(position, MAX_KEYFRAMES - 1)
            out.append(Transition(entry, previous, keyframe, step))
            previous = keyframe
    return out


# ---------------------------------------------------------------------------------------- sample loading
def target_action(entry: EpisodeEntry, target: int) -> np.ndarray:
    """RLBench action vector of keyframe ``target``: pose (qw >= 0), gripper_open, ignore_collisions(k-1)."""
    pose = entry.gripper_pose[target]
    norm = float(np.linalg.norm(pose[3:7]))
    if not np.isfinite(pose).all() or norm < 1e-6:
        raise TrainingDataError(f"{entry.record.path} frame {target}: invalid gripper pose {pose.tolist()}")
    quat = pose[3:7] / norm
    if quat[3] < 0:
        quat = -quat
    ignore = float(entry.ignore_collisions[max(target - 1, 0)])
    return np.concatenate([pose[:3], quat, [float(entry.gripper_open[target]), ignore]]).astype(np.float32)


class EpisodeStore:
    """Loads (and optionally caches in RAM) what samples need from disk: ARP inputs of observation frames
    and the video camera's videos."""

    def __init__(self, arp_config: ARPConfig, video_camera: str, cache: bool) -> None:
        self.arp_config = arp_config
        self.video_camera = video_camera
        self.cache = cache
        self._samples: dict[tuple[int, int, int], dict[str, Tensor]] = {}
        self._videos: dict[int, np.ndarray] = {}

    def _load_samples(self, entry: EpisodeEntry, frames_steps: Sequence[tuple[int, int]]) -> None:
        frames = sorted({f for f, _ in frames_steps})
        try:
            episode = load_episode(entry.record, cameras=list(self.arp_config.cameras), frames=frames)
        except DatasetError as exc:
            raise TrainingDataError(f"cannot load ARP inputs of {entry.record.path}: {exc}") from exc
        by_frame = dict(zip(frames, episode.observations))
        for frame, step in frames_steps:
            try:
                sample = observation_to_sample(by_frame[frame], self.arp_config, step)
            except PolicyInputError as exc:
                raise PolicyInputError(f"{entry.record.path} frame {frame}: {exc}") from exc
            self._samples[(entry.uid, frame, step)] = sample

    def preload(self, transitions: Sequence[Transition], entries: Sequence[EpisodeEntry]) -> None:
        """Decode every sample and video once (cache mode)."""
        needed: dict[int, set[tuple[int, int]]] = {}
        by_uid = {}
        for t in transitions:
            needed.setdefault(t.entry.uid, set()).add((t.obs_frame, t.step))
            by_uid[t.entry.uid] = t.entry
        for uid, frames_steps in needed.items():
            self._load_samples(by_uid[uid], sorted(frames_steps))
        for entry in entries:
            self.video(entry)

    def ee_sample(self, transition: Transition) -> dict[str, Tensor]:
        """``points``, ``rgb``, ``low_dim_state`` and ``action`` of one transition."""
        key = (transition.entry.uid, transition.obs_frame, transition.step)
        if key not in self._samples:
            self._load_samples(transition.entry, [(transition.obs_frame, transition.step)])
        sample = self._samples[key] if self.cache else self._samples.pop(key)
        action = target_action(transition.entry, transition.target_frame)
        return {**sample, "action": torch.from_numpy(action)}

    def video(self, entry: EpisodeEntry) -> np.ndarray:
        """The whole video of the video camera ``(T, H, W, 3)`` uint8 (cached in cache mode)."""
        if entry.uid in self._videos:
            return self._videos[entry.uid]
        video = np.stack([self._frame(entry, i) for i in range(entry.length)])
        if self.cache:
            self._videos[entry.uid] = video
        return video

    def _frame(self, entry: EpisodeEntry, index: int) -> np.ndarray:
        path = entry.record.path / image_folder(self.video_camera, "rgb") / frame_file(index)
        try:
            return read_png(path)
        except DatasetError as exc:
            raise TrainingDataError(
                f"cannot read the {self.video_camera} video of {entry.record.path}: {exc}"
            ) from exc

    def clip(self, entry: EpisodeEntry, indices: Sequence[int]) -> np.ndarray:
        """Frames ``indices`` of the front video, ``(len(indices), H, W, 3)`` uint8."""
        if self.cache or entry.uid in self._videos:
            return self.video(entry)[list(indices)]
        return np.stack([self._frame(entry, i) for i in indices])


# -------------------------------------------------------------------------------------------- batches
@dataclass
class PairedBatch:
    """One step's data: row ``i`` pairs AU clip ``clips[i]`` with EE sample ``ee[...][i]``."""

    ee: dict[str, Tensor]  # points, rgb, low_dim_state, action (no language yet)
    clips: Tensor  # (B, T, H, W, 3) uint8
    ee_instructions: list[str]
    au_instructions: list[str]
    keys: list[Hashable]
    au_ids: list[tuple[str, int]]  # (task, episode) of each clip
    ee_ids: list[tuple[str, int, int, int]]  # (task, episode, obs frame, target frame)


def identity_collate(batch: PairedBatch) -> PairedBatch:
    """DataLoader collate for batches that are already assembled."""
    return batch


def draw_au_clips(
    entries_by_task: dict[str, list[EpisodeEntry]],
    store: EpisodeStore,
    count: int,
    clip_frames: int,
    rng: np.random.Generator,
) -> tuple[list[EpisodeEntry], list[np.ndarray]]:
    """``count`` training clips: a uniform task, then a uniform episode of it (as ARP samples), then a random
    frame from each of ``clip_frames`` segments of its video."""
    tasks = sorted(entries_by_task)
    entries: list[EpisodeEntry] = []
    clips: list[np.ndarray] = []
    for _ in range(count):
        pool = entries_by_task[tasks[int(rng.integers(len(tasks)))]]
        entry = pool[int(rng.integers(len(pool)))]
        entries.append(entry)
        clips.append(
            store.clip(entry, sample_clip_indices(entry.length, clip_frames, mode="random", rng=rng))
        )
    return entries, clips


class PairedBatchBuilder:
    """Draws and assembles the paired batch of any (step, rank) deterministically."""

    def __init__(
        self,
        train_entries: Sequence[EpisodeEntry],
        transitions: Sequence[Transition],
        store: EpisodeStore,
        pairing: str,
        batch_size: int,
        clip_frames: int,
        seed: int,
        augment: bool,
    ) -> None:
        if not transitions:
            raise TrainingDataError("no EE transitions to train on")
        self.entries = list(train_entries)
        self.transitions = list(transitions)
        self.store = store
        self.batch_size = batch_size
        self.clip_frames = clip_frames
        self.seed = seed
        self.augment = augment
        self.key_of = key_function(pairing)
        self.tasks = sorted({e.task for e in self.entries})
        self.entries_by_task = {t: [e for e in self.entries if e.task == t] for t in self.tasks}
        self.ee_index = index_by_key([self.key_of(t) for t in self.transitions])
        unpaired = sorted({str(self.key_of(e)) for e in self.entries} - {str(k) for k in self.ee_index})
        if unpaired:
            raise TrainingDataError(f"AU keys without any EE transition: {unpaired[:5]}")

    def build(self, step: int, rank: int = 0) -> PairedBatch:
        rng = step_rng(self.seed, STREAM_DATA, step, rank)
        au_entries, clips = draw_au_clips(
            self.entries_by_task, self.store, self.batch_size, self.clip_frames, rng
        )
        keys = [self.key_of(e) for e in au_entries]
        chosen = pair_by_key(keys, self.ee_index, rng)
        transitions = [self.transitions[int(i)] for i in chosen]
        ee = stack_samples([self.store.ee_sample(t) for t in transitions])
        if self.augment:
            generator = torch.Generator().manual_seed(step_seed(self.seed, STREAM_AUGMENT, step, rank))
            ee = augment_batch(ee, self.store.arp_config, generator)
        return PairedBatch(
            ee=ee,
            clips=torch.from_numpy(np.stack(clips)),
            ee_instructions=[t.instruction for t in transitions],
            au_instructions=[e.instruction for e in au_entries],
            keys=keys,
            au_ids=[(e.task, e.episode) for e in au_entries],
            ee_ids=[(t.task, t.episode, t.obs_frame, t.target_frame) for t in transitions],
        )


def stack_samples(samples: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Stack per-sample tensors; every sample must have the same point count (same camera config)."""
    sizes = {s["points"].shape[0] for s in samples}
    if len(sizes) != 1:
        raise PolicyInputError(f"samples have different point counts {sorted(sizes)}")
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def build_eval_batch(
    entries: Sequence[EpisodeEntry],
    transitions: Sequence[Transition],
    store: EpisodeStore,
    pairing: str,
    pairs: int,
    clip_frames: int,
    seed: int,
) -> PairedBatch:
    """A fixed held-out batch: up to ``pairs`` clips (episodes in order, cycling) of the frames recognition
    decides on (as ``evaluate`` and the perception node pick them), each paired with a same-key transition of
    the same split; no augmentation."""
    key_of = key_function(pairing)
    rng = step_rng(seed, STREAM_EVAL, 0)
    count = min(pairs, max(len(entries), 2))
    au_entries = [entries[i % len(entries)] for i in range(count)]
    clips = [store.clip(e, demonstration_clip_indices(e.length, clip_frames)) for e in au_entries]
    keys = [key_of(e) for e in au_entries]
    chosen = pair_by_key(keys, index_by_key([key_of(t) for t in transitions]), rng)
    chosen_t = [transitions[int(i)] for i in chosen]
    return PairedBatch(
        ee=stack_samples([store.ee_sample(t) for t in chosen_t]),
        clips=torch.from_numpy(np.stack(clips)),
        ee_instructions=[t.instruction for t in chosen_t],
        au_instructions=[e.instruction for e in au_entries],
        keys=keys,
        au_ids=[(e.task, e.episode) for e in au_entries],
        ee_ids=[(t.task, t.episode, t.obs_frame, t.target_frame) for t in chosen_t],
    )


class StepBatches(torch.utils.data.Dataset):
    """Item ``i`` = the batch of step ``start + i`` on ``rank`` (lets a DataLoader prefetch in workers)."""

    def __init__(self, builder: PairedBatchBuilder, start: int, stop: int, rank: int) -> None:
        self.builder, self.start, self.stop, self.rank = builder, start, stop, rank

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, index: int) -> PairedBatch:
        return self.builder.build(self.start + index, self.rank)
