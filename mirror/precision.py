"""The numeric precision the models compute in: one autocast context for training and inference."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

INFERENCE_PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")


def precision_autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """The context of the training forward passes: bf16 or fp16 autocast for those precisions, else none.

    Autocast lowers only the compute (matmuls, convolutions) to bf16; the parameters stay float32 master
    weights, so gradients, optimizer states and checkpoints are float32 whatever the precision and a run
    resumes (or its checkpoints load) under any precision. Where bf16 would hurt (the point renderer, the
    heatmap / rotation / InfoNCE losses and their softmaxes) the models compute in float32 themselves.
    """
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()
