"""RLBench/PerAct on-disk dataset format, written and read without rlbench installed.

``write_episode`` produces folders that RLBench/PerAct code loads unchanged; ``RLBenchDataset`` and
``load_episode`` read both PerAct's and upstream RLBench's layouts into our ``Observation`` objects;
``discover_keyframes`` is PerAct's keyframe heuristic.
"""

from sim_bridge.dataset.codec import (
    DEPTH_SCALE,
    decode_depth,
    decode_mask,
    depth_quantisation_bound,
    encode_depth,
    encode_mask,
    read_png,
    write_png,
)
from sim_bridge.dataset.keyframes import discover_keyframes, discover_keyframes_from_arrays
from sim_bridge.dataset.layout import (
    LOW_DIM_PICKLE,
    RLBENCH_CAMERA_NAMES,
    VARIATION_DESCRIPTIONS,
    VARIATION_NUMBER,
)
from sim_bridge.dataset.pickles import (
    PickledDemo,
    PickledObservation,
    RestrictedUnpickler,
    load_demo,
    load_pickle,
    safe_loads,
)
from sim_bridge.dataset.reader import (
    Episode,
    EpisodeRecord,
    RLBenchDataset,
    describe_episode,
    load_episode,
)
from sim_bridge.dataset.writer import (
    is_complete_episode,
    next_episode_index,
    remove_stale_temp_dirs,
    write_episode,
)

__all__ = [
    "DEPTH_SCALE",
    "LOW_DIM_PICKLE",
    "RLBENCH_CAMERA_NAMES",
    "VARIATION_DESCRIPTIONS",
    "VARIATION_NUMBER",
    "Episode",
    "EpisodeRecord",
    "PickledDemo",
    "PickledObservation",
    "RLBenchDataset",
    "RestrictedUnpickler",
    "decode_depth",
    "decode_mask",
    "depth_quantisation_bound",
    "describe_episode",
    "discover_keyframes",
    "discover_keyframes_from_arrays",
    "encode_depth",
    "encode_mask",
    "is_complete_episode",
    "load_demo",
    "load_episode",
    "load_pickle",
    "next_episode_index",
    "read_png",
    "remove_stale_temp_dirs",
    "safe_loads",
    "write_episode",
    "write_png",
]
