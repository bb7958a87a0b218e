"""Mixed precision on CUDA (issue 10). Marked ``gpu``: skipped with a reason where there is no CUDA, as in CI;
run them with ``./scripts/test.sh -m gpu`` on a machine with a GPU. They need no simulator (the GPU machine
has no PyBullet): the inputs are the seeded scenes of test/golden/make_golden.py."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from mirror.precision import precision_autocast
from mirror.training.lamb import Lamb
from mirror_policy.arp.configuration import ARPConfig
from mirror_policy.arp.modeling import ARPPolicy

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def _policy_and_batch(golden_script) -> tuple[ARPPolicy, dict[str, torch.Tensor]]:
    policy = golden_script.arp_model().to(CUDA)
    batch = {k: v.to(CUDA) for k, v in golden_script.arp_batch(policy.config).items()}
    return policy, batch


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_arp_forward_under_cuda_autocast_stays_within_tolerance_of_fp32(golden_script, precision) -> None:
    policy, batch = _policy_and_batch(golden_script)
    with torch.no_grad():
        reference, info = policy(batch)
        with precision_autocast(precision, CUDA):
            lowered, lowered_info = policy(batch)
    assert torch.isfinite(lowered)
    assert abs(float(lowered) - float(reference)) <= 0.05 * abs(float(reference))  # 5% of the total loss
    assert torch.allclose(lowered_info["e"].float(), info["e"], atol=0.05, rtol=0.05)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_training_steps_keep_float32_weights_and_learn(golden_script, precision) -> None:
    policy, batch = _policy_and_batch(golden_script)
    policy.train()
    optimizer = Lamb(policy.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
    losses = []
    for _ in range(20):
        optimizer.zero_grad(set_to_none=True)
        with precision_autocast(precision, CUDA):
            loss, _ = policy(batch)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(float(loss))
    assert all(p.dtype == torch.float32 for p in policy.parameters())
    assert losses[-1] < losses[0]  # one repeated batch: the loss must fall


def test_peak_memory_of_a_paper_size_arp_step_is_reported(golden_script) -> None:
    """A smoke test of the measurement bench/bench_training.py relies on: a paper-size ARP step at batch 2."""
    torch.cuda.reset_peak_memory_stats()
    policy = ARPPolicy(ARPConfig.paper()).to(CUDA)
    batch = {k: v.to(CUDA) for k, v in golden_script.arp_batch(policy.config).items()}
    with precision_autocast("bf16", CUDA):
        loss, _ = policy(batch)
    loss.backward()
    assert 0 < torch.cuda.max_memory_allocated() < torch.cuda.get_device_properties(0).total_memory


def test_activation_checkpointing_lowers_the_peak_memory_of_a_paper_size_arp_step(golden_script) -> None:
    """The switch must pay where it is meant to: a lower CUDA peak for the same step and the same loss."""
    peaks, losses = [], []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        policy = (
            ARPPolicy(replace(ARPConfig.paper(), activation_checkpointing=checkpointing)).to(CUDA).train()
        )
        batch = {k: v.to(CUDA) for k, v in golden_script.arp_batch(policy.config).items()}
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        torch.manual_seed(1)
        with precision_autocast("bf16", CUDA):
            loss, _ = policy(batch)
        loss.backward()
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated())
        losses.append(float(loss))
        del policy, batch, loss
        torch.cuda.empty_cache()
    assert peaks[1] < peaks[0]
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)
