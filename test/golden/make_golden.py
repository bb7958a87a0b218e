"""Regenerate the golden-output files of test/golden/ (run from the repo root).

    .venv/bin/python test/golden/make_golden.py            # every file
    .venv/bin/python test/golden/make_golden.py arp        # one: viclip or arp

Only rerun this after a deliberate change of a cpu_tiny architecture or its initialisation (and, for ViCLIP,
the tokenizer; for ARP, the renderer or the action tokens): test_viclip.py and test_arp_model.py fail when a
model's outputs drift from the stored ones.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mirror_perception import ClipTokenizer, ViCLIP, get_config  # noqa: E402
from mirror_policy.arp.configuration import ARPConfig  # noqa: E402
from mirror_policy.arp.modeling import ARPPolicy  # noqa: E402

GOLDEN_DIR = Path(__file__).resolve().parent
MODEL_SEED = 0

# ------------------------------------------------------------------------------------------------ ViCLIP
VICLIP_INPUT_SEED = 1234
TEXTS = ("push the maroon button", "take the steak off the grill")


def viclip_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Two uint8 8-frame 128x128 clips from a seeded generator, and the token ids of TEXTS."""
    generator = torch.Generator().manual_seed(VICLIP_INPUT_SEED)
    frames = torch.randint(0, 256, (2, 8, 128, 128, 3), generator=generator, dtype=torch.uint8)
    return frames, ClipTokenizer()(list(TEXTS), context_length=32)


def viclip_model() -> ViCLIP:
    torch.manual_seed(MODEL_SEED)
    return ViCLIP(get_config("cpu_tiny")).eval()


@torch.no_grad()
def viclip_outputs() -> dict[str, torch.Tensor]:
    model = viclip_model()
    frames, token_ids = viclip_inputs()
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


# --------------------------------------------------------------------------------------------------- ARP
ARP_INPUT_SEED = 4321
POINTS = 3000


def arp_batch(config: ARPConfig) -> dict[str, torch.Tensor]:
    """Two seeded scenes: points in the workspace (some outside it, which the renderer must drop), colours,
    proprioception, 5 language tokens (the second scene's last two padded) and a target keyframe each."""
    generator = torch.Generator().manual_seed(ARP_INPUT_SEED)
    bounds = torch.tensor(config.scene_bounds)
    lo, hi = bounds[:3], bounds[3:]
    points = lo - 0.05 * (hi - lo) + torch.rand(2, POINTS, 3, generator=generator) * 1.1 * (hi - lo)
    return {
        "points": points,
        "rgb": torch.rand(2, POINTS, 3, generator=generator),
        "low_dim_state": torch.tensor([[1.0, 0.04, 0.04, 1.0], [0.0, 0.0, 0.0, 0.5]]),
        "lang": torch.randn(2, 5, config.lang_dim, generator=generator),
        "lang_mask": torch.tensor([[True] * 5, [True, True, True, False, False]]),
        # x, y, z, qx, qy, qz, qw, gripper_open, ignore_collisions: pointing down, then yawed by 90 degrees
        "action": torch.tensor(
            [
                [0.25, 0.10, 0.85, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                [0.05, -0.20, 0.95, 0.7071068, 0.7071068, 0.0, 0.0, 0.0, 1.0],
            ]
        ),
    }


def arp_model() -> ARPPolicy:
    torch.manual_seed(MODEL_SEED)
    return ARPPolicy(ARPConfig.cpu_tiny()).eval()


@torch.no_grad()
def arp_outputs() -> dict[str, torch.Tensor]:
    model = arp_model()
    batch = arp_batch(model.config)
    loss, info = model(batch)  # eval mode: no stage-2 centre noise, no rotation-input noise, no dropout
    actions, e = model.predict_action({k: v for k, v in batch.items() if k != "action"})
    terms = sorted(k for k in info if k.startswith("loss/"))
    return {
        "input_checksum": torch.stack([v.double().sum() for v in batch.values()]).sum().reshape(1),
        "param_checksum": torch.stack([p.double().sum() for p in model.parameters()]).sum().reshape(1),
        "loss_terms": torch.stack([info[k] for k in terms]),
        "teacher_forced_e": info["e"],
        "predicted_actions": actions,
        "predicted_e": e,
    }


GOLDEN: dict[str, tuple[Path, Callable[[], dict[str, torch.Tensor]]]] = {
    "viclip": (GOLDEN_DIR / "viclip_tiny_outputs.safetensors", viclip_outputs),
    "arp": (GOLDEN_DIR / "arp_tiny_outputs.safetensors", arp_outputs),
}


def main(names: list[str]) -> None:
    for name in names or list(GOLDEN):
        path, compute = GOLDEN[name]
        outputs = {k: v.contiguous() for k, v in compute().items()}
        save_file(outputs, str(path), metadata={"torch": torch.__version__, "config": "cpu_tiny"})
        print(f"wrote {path} ({', '.join(f'{k}{list(v.shape)}' for k, v in outputs.items())})")


if __name__ == "__main__":
    main(sys.argv[1:])
