"""A tiny RLBench-layout dataset recorded with the embedded simulator, and tiny training settings, shared by
the joint-model tests.

Three scripted push_buttons demos (two instructions) take ~30 s to record on a loaded 2-core machine, so
they are written once into a per-user temporary folder and reused by later test sessions; episodes are
written atomically, so an interrupted build is simply completed next time.
"""

from __future__ import annotations

import getpass
import tempfile
from pathlib import Path

from sim_bridge.errors import DatasetError

# (variation, seed) of each episode; the last one is the held-out episode at holdout_fraction 0.25.
EPISODES: tuple[tuple[int, int], ...] = ((0, 0), (1, 1), (0, 2))
TASK = "push_buttons"
VERSION = 1

# Tiny models and batches so that a step takes a fraction of a second on a loaded machine.
SMALL = [
    "viclip.vision_width=64", "viclip.vision_layers=1", "viclip.text_width=64", "viclip.text_layers=1",
    "viclip.embed_dim=32", "arp.img_size=32", "arp.point_stride=4", "arp.mvt_view_layers=1",
    "arp.mvt_joint_layers=1", "arp.cross_layers=1", "arp.self_layers=1", "arp.mlp_dim=64",
    "data.holdout_fraction=0.25", "data.sampling=keyframes", "batch_size=3", "eval_pairs=2", "log_every=1",
    "eval_every=1000", "checkpoint_every=1000", "optim.warmup_steps=1", "progress=false", "device=cpu",
    "optim.video_lr=1e-3", "optim.arp_lr_per_sample=1e-3",
]  # fmt: skip


def train_cli(data_root: Path, out: Path, *extra: str) -> list[str]:
    """``train_joint`` arguments of a tiny run on ``data_root``."""
    args = ["--data", str(data_root), "--out", str(out), "--log-level", "WARNING"]
    for item in SMALL:
        args += ["--set", item]
    return args + list(extra)


def tiny_dataset_root() -> Path:
    return Path(tempfile.gettempdir()) / f"mirror_test_demos_{getpass.getuser()}_v{VERSION}"


def build_tiny_dataset() -> Path:
    """The dataset root, recording whatever episodes are missing."""
    from sim_bridge.bullet.env import BulletBackend
    from sim_bridge.dataset import is_complete_episode, write_episode

    root = tiny_dataset_root()
    episodes = root / TASK / "all_variations" / "episodes"
    missing = [k for k in range(len(EPISODES)) if not is_complete_episode(episodes / f"episode{k}")]
    if not missing:
        return root
    env = BulletBackend()
    try:
        for k in missing:
            variation, seed = EPISODES[k]
            info, _ = env.reset(TASK, variation, seed)
            frames = env.demo()
            try:
                write_episode(episodes / f"episode{k}", frames, info.descriptions, info.variation, seed)
            except DatasetError:
                if not is_complete_episode(episodes / f"episode{k}"):  # written meanwhile by another session
                    raise
    finally:
        env.close()
    return root
