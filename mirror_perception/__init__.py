"""Action understanding for Mirror: ViCLIP (video-text contrastive model), CLIP tokenizer, checkpoints and
live instruction recognition."""

from .clip_sampling import sample_clip_indices
from .configuration_viclip import CONFIG_NAMES, IMAGENET_MEAN, IMAGENET_STD, ViCLIPConfig, get_config
from .demonstration import FrameSource, demonstration_clip, recognize_demonstration
from .errors import (
    ConfigError,
    InvalidTokensError,
    InvalidVideoError,
    PerceptionError,
    StateDictMismatchError,
    TokenizerError,
    ViCLIPCheckpointError,
)
from .modeling_viclip import (
    TextTransformer,
    ViCLIP,
    ViCLIPOutput,
    VisionTransformer,
    video_text_contrastive_loss,
)
from .recognition import InstructionRecognizer
from .tokenizer import ClipTokenizer
from .video_input import prepare_video
from .weights import (
    check_state_dict,
    infer_official_config,
    load_official_checkpoint,
    load_pretrained,
    model_from_official_state_dict,
    read_checkpoint_file,
    resize_position_tables,
    save_pretrained,
    unwrap_state_dict,
)

__all__ = [
    "CONFIG_NAMES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ViCLIPCheckpointError",
    "ClipTokenizer",
    "ConfigError",
    "FrameSource",
    "InstructionRecognizer",
    "InvalidTokensError",
    "InvalidVideoError",
    "PerceptionError",
    "StateDictMismatchError",
    "TextTransformer",
    "TokenizerError",
    "ViCLIP",
    "ViCLIPConfig",
    "ViCLIPOutput",
    "VisionTransformer",
    "check_state_dict",
    "demonstration_clip",
    "get_config",
    "infer_official_config",
    "load_official_checkpoint",
    "load_pretrained",
    "model_from_official_state_dict",
    "prepare_video",
    "read_checkpoint_file",
    "recognize_demonstration",
    "resize_position_tables",
    "sample_clip_indices",
    "save_pretrained",
    "unwrap_state_dict",
    "video_text_contrastive_loss",
]
