"""Regenerate test/golden/viclip_tiny_outputs.safetensors (run from the repo root).

    .venv/bin/python test/golden/make_viclip_golden.py

Only rerun this after a deliberate change of the cpu_tiny architecture, its initialisation or the
tokenizer; test_viclip.py fails if the model's outputs drift from the stored ones by more than 1e-5.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mirror_perception import ClipTokenizer, ViCLIP, get_config  # noqa: E402

GOLDEN_PATH = Path(__file__).resolve().parent / "viclip_tiny_outputs.safetensors"
MODEL_SEED = 0
INPUT_SEED = 1234
TEXTS = ("push the maroon button", "take the steak off the grill")


def golden_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Two uint8 8-frame 128x128 clips from a seeded generator, and the token ids of TEXTS."""
    generator = torch.Generator().manual_seed(INPUT_SEED)
    frames = torch.randint(0, 256, (2, 8, 128, 128, 3), generator=generator, dtype=torch.uint8)
    return frames, ClipTokenizer()(list(TEXTS), context_length=32)


def golden_model() -> ViCLIP:
    torch.manual_seed(MODEL_SEED)
    return ViCLIP(get_config("cpu_tiny")).eval()


@torch.no_grad()
def compute_golden_outputs() -> dict[str, torch.Tensor]:
    model = golden_model()
    frames, token_ids = golden_inputs()
    video_features = model.video_features(frames)
    video_embeds = model.encode_video(frames)
    text_embeds = model.encode_text(token_ids)
    return {
        "token_ids": token_ids,
        "input_checksum": frames.double().sum().reshape(1),
        "param_checksum": torch.stack([p.double().sum() for p in model.parameters()]).sum().reshape(1),
        "video_features": video_features,
        "video_embeds": video_embeds,
        "text_embeds": text_embeds,
        "logits_per_video": model.similarity_logits(video_embeds, text_embeds),
    }


def main() -> None:
    outputs = {k: v.contiguous() for k, v in compute_golden_outputs().items()}
    save_file(outputs, str(GOLDEN_PATH), metadata={"torch": torch.__version__, "config": "cpu_tiny"})
    print(f"wrote {GOLDEN_PATH} ({', '.join(f'{k}{list(v.shape)}' for k, v in outputs.items())})")


if __name__ == "__main__":
    main()
