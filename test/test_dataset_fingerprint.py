"""dataset_fingerprint: regenerated demonstrations hash the same, changed ones do not."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from mirror_test_data import EPISODES, TASK, build_tiny_dataset

from sim_bridge.dataset import LOW_DIM_PICKLE, load_demo, write_episode
from sim_bridge.dataset.fingerprint import dataset_fingerprint
from sim_bridge.dataset.pickles import demo_to_bytes, dump_descriptions
from sim_bridge.errors import DatasetError

EPISODE = Path(TASK) / "all_variations" / "episodes" / "episode0"


def copy_dataset(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    shutil.copytree(build_tiny_dataset(), root)
    return root


def nudge_gripper_position(episode: Path, metres: float) -> None:
    demo = load_demo(episode / LOW_DIM_PICKLE)
    pose = np.asarray(demo[1].gripper_pose, dtype=np.float64).copy()
    pose[0] += metres
    demo[1].gripper_pose = pose
    (episode / LOW_DIM_PICKLE).write_bytes(demo_to_bytes(demo))


def test_a_copy_elsewhere_has_the_same_fingerprint_and_changes_alter_it(tmp_path: Path) -> None:
    original = dataset_fingerprint(build_tiny_dataset())
    assert len(original) == 64
    root = copy_dataset(tmp_path, "copy")
    assert dataset_fingerprint(root) == original  # the folder's location does not count

    nudge_gripper_position(root / EPISODE, 1e-7)  # below the rounding: float noise
    assert dataset_fingerprint(root) == original
    nudge_gripper_position(root / EPISODE, 1e-3)  # a millimetre is another demonstration
    moved = dataset_fingerprint(root)
    assert moved != original

    dump_descriptions(root / EPISODE / "variation_descriptions.pkl", ["press the red button"])
    assert dataset_fingerprint(root) not in (original, moved)

    other = copy_dataset(tmp_path, "fewer")
    shutil.rmtree(other / EPISODE.parent / "episode2")
    assert dataset_fingerprint(other) != original


def test_a_regenerated_episode_hashes_as_the_recorded_one(tmp_path: Path) -> None:
    """The study's premise: demonstrations generated again from the same seeds, in another process, are the
    same data."""
    from sim_bridge.bullet.env import BulletBackend

    recorded = tmp_path / "recorded"
    shutil.copytree(build_tiny_dataset() / EPISODE, recorded / EPISODE)
    variation, seed = EPISODES[0]
    env = BulletBackend()
    try:
        info, _ = env.reset(TASK, variation, seed)
        frames = env.demo()
    finally:
        env.close()
    regenerated = tmp_path / "regenerated"
    write_episode(regenerated / EPISODE, frames, info.descriptions, info.variation, seed)
    assert dataset_fingerprint(regenerated) == dataset_fingerprint(recorded)


def test_a_folder_without_episodes_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no episodes"):
        dataset_fingerprint(tmp_path)
