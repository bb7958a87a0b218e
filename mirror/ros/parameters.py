"""Parameters (names, defaults, hence types) of the policy, perception and mirror_loop nodes (ROS-free).

The nodes declare exactly these; ``test/test_launch_config.py`` checks ``config/sim.yaml`` against them, types
included (ROS 2 refuses an integer for a double parameter).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from mirror.ros.launch_config import DEFAULT_CHECKPOINT
from sim_bridge.cameras import IMAGE_SIZE

POLICY_PARAMETERS: dict[str, object] = {
    "checkpoint": DEFAULT_CHECKPOINT,
    "device": "cpu",
    "threads": 0,  # torch intra-op threads, 0 = torch's default
    "precision": "fp32",  # inference compute: fp32, or bf16 / fp16 autocast (float32 weights)
    "coarse_prior": 0.0,  # weight of ARP's coarse stage in placing a keyframe (MirrorAgent); 0 = as trained
    "max_set_age": 0.5,  # s; older camera sets are stale
    "observation_timeout": 2.0,  # s without a usable set, while an action is due, before a warning
    "max_invalid_depth_fraction": 0.5,
}

PERCEPTION_PARAMETERS: dict[str, object] = {
    "checkpoint": DEFAULT_CHECKPOINT,
    "device": "cpu",
    "threads": 0,
    "precision": "fp32",
    "camera": "",  # "" = the checkpoint's camera_for_video (any other camera is refused)
    "image_size": IMAGE_SIZE,  # expected frame size; 0 accepts any
    "window": 4.0,  # s of frames in the sliding window
    "recognize_period": 1.0,  # s between live recognitions during a demonstration
    "top_k": 5,
    "min_frames": 2,  # frames needed for a live recognition
    "frame_timeout": 2.0,  # s without a usable frame during a demonstration before a warning
    "max_demo_frames": 1200,
    "final_grace": 0.3,  # s to wait for frames in flight after the demo ends
}


@dataclass
class LoopConfig:
    """The mirror loop's parameters."""

    episodes: int = 5
    tasks: str = ""  # comma-separated; empty = every task in the policy's vocabulary
    seed: int = 0
    startup_timeout: float = 180.0  # s for the bridge, policy and perception to come up (model loading)
    service_timeout: float = 30.0  # s for a parameter change / play_demo answer / the new episode's status
    reset_timeout: float = 150.0  # s for reset_episode (the bridge itself allows 120 s)
    ack_timeout: float = 10.0  # s for the policy to acknowledge an instruction
    demo_timeout: float = 300.0  # s for a demonstration to finish
    recognition_timeout: float = 30.0  # s after the demo for the final recognition
    action_timeout: float = 120.0  # s without progress (an action or a status change) in a policy episode
    episode_timeout: float = 900.0  # s for a whole policy episode
    videos: str = ""  # directory: one annotated GIF per episode (episode_outputs); "" = none
    record: str = ""  # directory: one MCAP file of the stack's topics per episode (recording); "" = none

    def __post_init__(self) -> None:
        if self.episodes < 0:
            raise ValueError(f"episodes must be >= 0, got {self.episodes}")
        for f in fields(self):
            if f.name.endswith("_timeout") and not getattr(self, f.name) > 0:
                raise ValueError(f"{f.name} must be positive, got {getattr(self, f.name)}")


def loop_parameters() -> dict[str, object]:
    return {f.name: f.default for f in fields(LoopConfig)}
