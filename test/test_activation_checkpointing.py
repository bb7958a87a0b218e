"""Activation checkpointing (``viclip.activation_checkpointing``, ``arp.activation_checkpointing``): the
blocks really are recomputed in backward, and the loss, the gradients and the random streams equal those
without it (dropout, stochastic depth and masking included): the switch trades compute for memory, nothing
else."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from test_arp_model import random_batch

from mirror_perception.configuration_viclip import get_config
from mirror_perception.modeling_viclip import ViCLIP
from mirror_perception.tokenizer import ClipTokenizer
from mirror_policy.arp.configuration import TRAINING_ONLY_FIELDS, ARPConfig
from mirror_policy.arp.modeling import ARPPolicy

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def count_calls(module: torch.nn.Module) -> list[int]:
    """Calls of ``module.forward`` (forward hooks do not fire in checkpointing's recomputation)."""
    calls = [0]
    forward = module.forward

    def counted(*args, **kwargs):
        calls[0] += 1
        return forward(*args, **kwargs)

    module.forward = counted
    return calls


def assert_same_gradients(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        if pa.grad is None:
            assert pb.grad is None, name
            continue
        torch.testing.assert_close(pb.grad, pa.grad, atol=1e-6, rtol=1e-5, msg=name)


def viclip_pair() -> tuple[ViCLIP, ViCLIP]:
    config = replace(get_config("cpu_tiny"), vision_drop_path_rate=0.3, masking_ratio=0.5)
    torch.manual_seed(0)
    plain = ViCLIP(config).train()
    checkpointed = ViCLIP(replace(config, activation_checkpointing=True)).train()
    checkpointed.load_state_dict(plain.state_dict())
    return plain, checkpointed


def test_viclip_recomputes_its_blocks_with_the_same_gradients_and_streams() -> None:
    plain, checkpointed = viclip_pair()
    ids = ClipTokenizer()(["push the red button", "open the top drawer"], context_length=32)
    frames = torch.randint(
        0, 256, (2, 8, 128, 128, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    calls = count_calls(checkpointed.vision_encoder.transformer.resblocks[0])
    losses, states = [], []
    for model in (plain, checkpointed):
        stream = torch.Generator().manual_seed(7)  # masking and stochastic depth through an explicit stream
        torch.manual_seed(3)
        loss = model(frames, ids, generator=stream).loss
        loss.backward()
        losses.append(loss.detach())
        states.append(stream.get_state())
    assert calls[0] == 2  # forward, then the recomputation in backward
    torch.testing.assert_close(losses[1], losses[0], atol=0, rtol=0)
    assert torch.equal(states[1], states[0])  # the caller's stream moved on exactly as without checkpointing
    assert_same_gradients(plain, checkpointed)


def test_viclip_with_torchs_global_stream_and_in_eval_mode() -> None:
    plain, checkpointed = viclip_pair()
    video = torch.rand(2, 8, 3, 128, 128, generator=torch.Generator().manual_seed(2))  # (B, T, C, H, W)
    for model in (plain, checkpointed):
        torch.manual_seed(5)
        model.vision_encoder(video, masking_ratio=0.5).square().mean().backward()
    assert_same_gradients(plain, checkpointed)
    calls = count_calls(checkpointed.vision_encoder.transformer.resblocks[0])
    with torch.no_grad():  # nothing to recompute without gradients
        checkpointed.eval().vision_encoder(video)
    assert calls[0] == 1


def test_arp_recomputes_its_blocks_with_the_same_loss_and_gradients() -> None:
    assert "activation_checkpointing" in TRAINING_ONLY_FIELDS  # --init may switch it on for a fine-tune
    config = ARPConfig.cpu_tiny()
    torch.manual_seed(0)
    plain = ARPPolicy(config).train()
    checkpointed = ARPPolicy(replace(config, activation_checkpointing=True)).train()
    checkpointed.load_state_dict(plain.state_dict())
    batch = random_batch(config, 2, 3000)
    blocks = (
        checkpointed.mvt_coarse.view_layers[0],
        checkpointed.mvt_fine.joint_layers[0],
        checkpointed.cct.cross_blocks[0],
        checkpointed.cct.self_blocks[0],
    )
    calls = [count_calls(block) for block in blocks]
    losses = []
    for model in (plain, checkpointed):
        torch.manual_seed(4)  # dropout and the training-time noise
        loss, _ = model(batch)
        loss.backward()
        losses.append(loss.detach())
    assert all(c[0] % 2 == 0 and c[0] >= 2 for c in calls)  # each forward recomputed once
    torch.testing.assert_close(losses[1], losses[0], atol=0, rtol=0)
    assert_same_gradients(plain, checkpointed)
