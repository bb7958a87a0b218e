"""File and folder names of RLBench/PerAct episodes, in one place so writer and reader cannot disagree.

Names are RLBench's (research/rlbench.md section 1): frames are ``'%d.png'`` without zero padding, image
folders are ``<camera>_<kind>``, and episodes live in ``episodes/episode<N>`` under either ``all_variations``
(PerAct) or ``variation<V>`` (upstream RLBench).
"""

from __future__ import annotations

import re
from pathlib import Path

LOW_DIM_PICKLE = "low_dim_obs.pkl"
VARIATION_DESCRIPTIONS = "variation_descriptions.pkl"
VARIATION_NUMBER = "variation_number.pkl"
EPISODES_FOLDER = "episodes"
ALL_VARIATIONS_FOLDER = "all_variations"
# Our own keys in frame 0's ``misc`` (generated demos only; RLBench's readers ignore extra misc keys).
SEED_KEY = "mirror_episode_seed"  # the simulator seed the demo was generated from
WAYPOINTS_KEY = "mirror_waypoint_frames"  # frames at which the scripted demo reached each waypoint

IMAGE_KINDS: tuple[str, ...] = ("rgb", "depth", "mask")
# The five cameras of RLBench's scene; every pickled Observation carries image fields for all of them.
RLBENCH_CAMERA_NAMES: tuple[str, ...] = ("left_shoulder", "right_shoulder", "overhead", "wrist", "front")

EPISODE_NAME = re.compile(r"episode(\d+)")
VARIATION_NAME = re.compile(r"variation(\d+)")
_FRAME_NAME = re.compile(r"(\d+)\.png")


def image_folder(camera: str, kind: str) -> str:
    return f"{camera}_{kind}"


def frame_file(index: int) -> str:
    return f"{index}.png"


def episode_number(name: str) -> int | None:
    """N for a folder called ``episode<N>``, else None."""
    m = EPISODE_NAME.fullmatch(name)
    return int(m.group(1)) if m else None


def variation_number_from_name(name: str) -> int | None:
    """V for a folder called ``variation<V>``, else None."""
    m = VARIATION_NAME.fullmatch(name)
    return int(m.group(1)) if m else None


def frame_files(folder: Path) -> set[str]:
    """Names of the ``<i>.png`` files in ``folder`` (listing only; nothing is decoded)."""
    return {p.name for p in folder.iterdir() if _FRAME_NAME.fullmatch(p.name)}


def camera_folders(episode_dir: Path) -> dict[str, set[str]]:
    """Camera name -> image kinds that have a folder in the episode."""
    found: dict[str, set[str]] = {}
    for child in episode_dir.iterdir():
        if not child.is_dir():
            continue
        camera, _, kind = child.name.rpartition("_")
        if camera and kind in IMAGE_KINDS:
            found.setdefault(camera, set()).add(kind)
    return found
