"""Process-group set-up for ``torchrun``: one process per device, NCCL on CUDA and gloo on CPU.

Without torchrun's environment (``WORLD_SIZE`` unset or 1) training runs in a single process and every helper
here degrades to a no-op, so the same code path serves laptops, CI and multi-GPU nodes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: its rank, the number of processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else CPU; otherwise the named device."""
    if preference == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {preference!r} requested but CUDA is not available")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def setup_distributed(device_preference: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``), if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, local_rank, device)


def barrier(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.barrier()


def teardown(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_ranks_agree(info: DistInfo, value: int) -> bool:
    """True when every rank holds the same integer (guards against diverging step counters)."""
    if not info.distributed:
        return True
    tensor = torch.tensor([value, -value], dtype=torch.long, device=info.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor[0]) == value and int(-tensor[1]) == value


class _GatherWithGrad(torch.autograd.Function):
    """``all_gather`` whose backward sends every rank's gradient of the gathered tensor back to the rank
    that owns each slice (summed over ranks), so a loss over the global batch trains every rank's encoders."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # noqa: ANN001 - autograd's context
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_batch(
    info: DistInfo, u: torch.Tensor, e: torch.Tensor, keys: list
) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Every rank's ``u``, ``e`` and pairing keys, concatenated in rank order (equal batches per rank), with
    gradients flowing back to each rank's own rows: the alignment then scores each pair against the global
    batch's negatives (the paper's 192 at 2 x 96), not only the local ones. Every rank computes the same
    global loss, so the gradient of a rank's rows is the sum over ranks, i.e. ``world_size`` times the
    single-process gradient, which DDP's averaging over ranks undoes. Single process: unchanged."""
    if not info.distributed:
        return u, e, list(keys)
    gathered_keys: list[list] = [[] for _ in range(info.world_size)]
    dist.all_gather_object(gathered_keys, list(keys))
    return _GatherWithGrad.apply(u), _GatherWithGrad.apply(e), [k for part in gathered_keys for k in part]
