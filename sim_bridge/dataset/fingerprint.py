"""A dataset's fingerprint: one hash that says whether two folders hold the same demonstrations.

Studies that span machines or sessions regenerate their data (datasets are never committed), and results
made on one copy may only be combined with results made on another if the demonstrations are the same. The
hash covers what training reads as targets and labels: per episode (in the reader's order) its task,
variation, instructions, frame count and every frame's gripper pose, joint positions and gripper opening,
rounded to 0.1 mm / 1e-4 so that the last bits of a float do not count. Images are not hashed: the simulator
renders them from those same states, and reading every PNG would take minutes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from sim_bridge.dataset.layout import LOW_DIM_PICKLE
from sim_bridge.dataset.pickles import load_demo
from sim_bridge.dataset.reader import RLBenchDataset

DECIMALS = 4


def dataset_fingerprint(root: Path) -> str:
    """The SHA-256 (hex) of the dataset under ``root`` (see the module docstring); a :class:`DatasetError`
    where the reader refuses the folder."""
    digest = hashlib.sha256()
    for record in RLBenchDataset(root):
        header = f"{record.task}|{record.variation}|{'|'.join(record.descriptions)}|{record.length}\n"
        digest.update(header.encode())
        for observation in load_demo(record.path / LOW_DIM_PICKLE):
            state = np.concatenate(
                [
                    np.asarray(observation.gripper_pose, dtype=np.float64).ravel(),
                    np.asarray(observation.joint_positions, dtype=np.float64).ravel(),
                    [float(observation.gripper_open)],
                ]
            )
            digest.update((np.round(state, DECIMALS) + 0.0).astype("<f8").tobytes())  # + 0.0: no -0.0
    return digest.hexdigest()
