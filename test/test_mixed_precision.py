"""bf16 training (``precision: bf16``): the renderer ignores autocast, ARP and ViCLIP under bf16 autocast stay
within stated tolerances of float32, the attention paths agree, the multi-tensor LAMB step, and a bf16 joint
training step keeps float32 weights, optimizer states and checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from test_arp_model import random_batch
from test_train_joint import CPU, data_root, small_config  # noqa: F401 - data_root is a fixture

from mirror.model import WEIGHTS_NAME, MirrorModel
from mirror.precision import precision_autocast
from mirror.training.config import load_train_config
from mirror.training.lamb import MAX_WEIGHT_NORM, Lamb
from mirror.training.trainer import MirrorTrainer
from mirror_perception.configuration_viclip import get_config
from mirror_perception.modeling_viclip import ViCLIP
from mirror_perception.tokenizer import ClipTokenizer
from mirror_perception.transformer_layers import attention, dropout_keep_mask
from mirror_policy.arp.configuration import PERACT_SCENE_BOUNDS, ARPConfig
from mirror_policy.arp.modeling import ARPPolicy
from mirror_policy.arp.renderer import (
    CubeFrame,
    VirtualViewRenderer,
    cube_to_view,
    view_rotations,
    view_to_cube,
)

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def bf16() -> torch.autocast:
    return torch.autocast("cpu", dtype=torch.bfloat16)


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value.float() - reference).norm() / reference.norm())


# ------------------------------------------------------------------------------------------- renderer
def test_projection_and_renderer_are_exact_under_bf16_autocast() -> None:
    g = torch.Generator().manual_seed(0)
    cube = torch.rand(4, 500, 3, generator=g) * 2.2 - 1.1  # some points outside the cube
    with bf16():
        plane, depth = cube_to_view(cube)
    local = torch.einsum("vij,bnj->bnvi", view_rotations(), cube)
    assert plane.dtype == torch.float32
    assert torch.equal(plane, local[..., :2]) and torch.equal(depth, 1.0 + local[..., 2])
    for v in range(3):
        pixel = (plane[..., v, :] + 1.0) * 32.0 - 0.5
        torch.testing.assert_close(view_to_cube(v, pixel, depth[..., v], 64), cube, atol=1e-6, rtol=0)

    frame = CubeFrame.from_bounds(PERACT_SCENE_BOUNDS, 4)
    points = frame.to_world(cube)
    rgb = torch.rand(4, 500, 3, generator=g)
    renderer = VirtualViewRenderer(64, 0.03)
    reference = renderer.render(frame.to_cube(points), rgb)
    with bf16():
        mixed = renderer.render(frame.to_cube(points), rgb)
    for name in ("images", "depth", "point_index"):
        assert torch.equal(getattr(mixed, name), getattr(reference, name)), name


# -------------------------------------------------------------------------------------- model outputs
def test_arp_bf16_forward_stays_within_tolerance_of_fp32() -> None:
    """Tolerances (measured at seed 0: loss terms 2e-4, e 0.4%, heatmap logits 0.5%): loss terms 1e-3
    relative, e and the coarse heatmap logits 3% relative L2; heatmap and rotation logits are float32."""
    torch.manual_seed(0)
    cfg = ARPConfig.cpu_tiny()
    policy = ARPPolicy(cfg).eval()
    batch = random_batch(cfg, 2, 3000)
    captured: list[torch.Tensor] = []
    policy.cct.heatmap_heads[0].register_forward_hook(lambda _m, _i, out: captured.append(out))
    with torch.no_grad():
        loss32, info32 = policy(batch)
        with bf16():
            loss16, info16 = policy(batch)
    logits32, logits16 = captured
    assert logits16.dtype == torch.float32 and loss16.dtype == torch.float32
    for key, value in info32.items():
        if key.startswith("loss/"):
            assert math.isclose(float(info16[key]), float(value), rel_tol=1e-3), key
    assert relative_error(info16["e"], info32["e"]) < 0.03
    assert relative_error(logits16, logits32) < 0.03


def test_viclip_bf16_forward_stays_within_tolerance_of_fp32() -> None:
    """Tolerances (measured: cosine >= 0.99993, logits 0.024 at scale 20, loss 0.15%): embeddings cosine
    >= 0.999, float32 logits within 0.1, loss 1% relative, video features 3% relative L2."""
    torch.manual_seed(0)
    model = ViCLIP(get_config("cpu_tiny")).eval()
    ids = ClipTokenizer()(["push the red button", "open the top drawer", "turn the tap"], context_length=32)
    frames = torch.randint(
        0, 256, (3, 8, 128, 128, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3)
    )
    with torch.no_grad():
        full = model(frames, ids)
        with bf16():
            mixed = model(frames, ids)
    assert mixed.logits_per_video.dtype == torch.float32 and mixed.loss.dtype == torch.float32
    for name in ("video_embeds", "text_embeds"):
        cosine = F.cosine_similarity(getattr(mixed, name), getattr(full, name))
        assert float(cosine.min()) >= 0.999, name
    torch.testing.assert_close(mixed.logits_per_video, full.logits_per_video, atol=0.1, rtol=0)
    assert math.isclose(float(mixed.loss), float(full.loss), rel_tol=0.01)
    assert relative_error(mixed.video_features, full.video_features) < 0.03


# ------------------------------------------------------------------------------------------- attention
def test_unfused_attention_matches_the_fused_kernel_and_applies_dropout() -> None:
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 4, 30, 16, generator=g) for _ in range(3))
    mask = torch.rand(2, 1, 1, 30, generator=g) > 0.3
    mask[..., 0] = True
    for kwargs in ({"mask": mask}, {"causal": True}):
        reference = F.scaled_dot_product_attention(
            q, k, v, attn_mask=kwargs.get("mask"), is_causal="causal" in kwargs
        )
        torch.testing.assert_close(attention(q, k, v, **kwargs), reference)  # float32: the fused kernel
        with bf16():  # bf16 on CPU: the unfused path
            out = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), **kwargs)
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), reference, atol=0.03, rtol=0)
    torch.manual_seed(5)
    out = attention(q, k, v, mask, dropout_p=0.25)
    torch.manual_seed(5)
    keep = dropout_keep_mask((2, 4, 30, 30), 0.25, q.device)
    probs = (q @ k.transpose(-2, -1) / 4.0).masked_fill(~mask, -math.inf).softmax(-1)
    torch.testing.assert_close(out, (probs * keep / 0.75) @ v)


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_dropout_keep_mask_drops_at_rate_p_in_every_lane(p: float) -> None:
    torch.manual_seed(0)
    keep = dropout_keep_mask((500, 803), p, torch.device("cpu"))
    assert keep.shape == (500, 803) and keep.dtype == torch.bool
    lanes = keep.flatten()[: keep.numel() // 4 * 4].view(-1, 4).float()  # the four 15-bit lanes of an int64
    torch.testing.assert_close(1.0 - lanes.mean(0), torch.full((4,), p), atol=0.005, rtol=0)


# ------------------------------------------------------------------------------------------------ LAMB
def test_multi_tensor_lamb_matches_the_per_tensor_formula() -> None:
    g = torch.Generator().manual_seed(2)
    shapes = [(5, 3), (7,), (2, 2, 2)]
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    params[1].data.mul_(0.0)  # zero weight: trust ratio 1
    params[2].data.mul_(100.0)  # weight norm above MAX_WEIGHT_NORM: clamped
    frozen = torch.nn.Parameter(torch.randn(3, generator=g))  # no gradient: untouched
    for bias_correction in (False, True):
        expected = [p.detach().clone() for p in params]
        moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
        optimizer = Lamb([*params, frozen], lr=0.01, weight_decay=0.1, bias_correction=bias_correction)
        frozen_before = frozen.detach().clone()
        for step in range(1, 4):
            for i, p in enumerate(params):
                p.grad = torch.randn(p.shape, generator=g)
                m, v = moments[i]
                m.mul_(0.9).add_(p.grad, alpha=0.1)
                v.mul_(0.999).addcmul_(p.grad, p.grad, value=0.001)
                m_hat, v_hat = (m / (1 - 0.9**step), v / (1 - 0.999**step)) if bias_correction else (m, v)
                update = m_hat / (v_hat.sqrt() + 1e-6) + 0.1 * expected[i]
                w_norm, u_norm = expected[i].norm().clamp(max=MAX_WEIGHT_NORM), update.norm()
                trust = w_norm / u_norm if w_norm > 0 else torch.tensor(1.0)
                expected[i] = expected[i] - 0.01 * trust * update
            optimizer.step()
        for p, e in zip(params, expected):
            torch.testing.assert_close(p.detach(), e, rtol=1e-5, atol=1e-6)
        assert torch.equal(frozen, frozen_before) and frozen not in optimizer.state


# ------------------------------------------------------------------------------------------- training
def test_bf16_training_steps_keep_float32_weights_states_and_checkpoints(
    data_root: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    config = small_config(data_root, tmp_path / "run", "precision=bf16", "au_update_prob=0.5", "seed=3")
    trainer = MirrorTrainer(config, CPU)
    au_steps = 0
    for step in range(4):
        metrics = trainer.train_step(step, trainer.builder.build(step))
        assert all(math.isfinite(v) for v in metrics.values()), metrics
        au_steps += int(metrics["au_step"])
    assert 0 < au_steps < 4  # both kinds of step ran
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in trainer.model.parameters())
    for optimizer in trainer.optimizers.named().values():
        for state in optimizer.state.values():
            assert all(t.dtype == torch.float32 for t in state.values() if isinstance(t, torch.Tensor))
    checkpoint = trainer.save(4)
    stored = load_file(str(checkpoint / WEIGHTS_NAME))
    assert all(t.dtype == torch.float32 for t in stored.values() if t.is_floating_point())
    # the checkpoint loads, and a run resumes from it in float32 (precision does not change the state)
    MirrorModel.from_pretrained(checkpoint)
    fp32_config = small_config(data_root, tmp_path / "run", "precision=fp32", "au_update_prob=0.5", "seed=3")
    resumed = MirrorTrainer(fp32_config, CPU, resume=checkpoint)
    assert resumed.start_step == 4
    for (name, mine), theirs in zip(trainer.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(mine, theirs), name
    assert math.isfinite(resumed.train_step(4, resumed.builder.build(4))["loss/total"])
    with precision_autocast("bf16", CPU.device):
        assert torch.is_autocast_enabled("cpu")
    with precision_autocast("fp32", CPU.device):
        assert not torch.is_autocast_enabled("cpu")


def test_fp16_training_scales_the_loss_skips_overflowing_steps_and_resumes_the_scale(
    data_root: Path,  # noqa: F811 - the fixture imported above
    tmp_path: Path,
) -> None:
    config = small_config(data_root, tmp_path / "run", "precision=fp16", "au_update_prob=0.5", "seed=3")
    trainer = MirrorTrainer(config, CPU)
    assert trainer.scaler.is_enabled() and trainer.scaler.get_scale() == 65536.0
    before = {k: v.clone() for k, v in trainer.model.arp.state_dict().items()}
    for step in range(3):
        metrics = trainer.train_step(step, trainer.builder.build(step))
        assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert metrics["loss_scale"] == trainer.scaler.get_scale()
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.arp.state_dict().items())  # it learns
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    # an overflowing step is skipped, not applied, and the scale halves
    scale = trainer.scaler.get_scale()
    trainer.scaler.update(new_scale=float(torch.finfo(torch.float32).max))
    weights = {k: v.clone() for k, v in trainer.model.arp.state_dict().items() if v.is_floating_point()}
    trainer.train_step(3, trainer.builder.build(3))
    assert all(torch.equal(weights[k], trainer.model.arp.state_dict()[k]) for k in weights)
    assert trainer.scaler.get_scale() < float(torch.finfo(torch.float32).max)
    checkpoint = trainer.save(4)
    resumed = MirrorTrainer(config, CPU, resume=checkpoint)
    assert resumed.scaler.get_scale() == trainer.scaler.get_scale() != scale
    with precision_autocast("fp16", CPU.device):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.float16


@pytest.mark.slow  # a full joint step / evaluate with rollouts: seconds, kept out of the quick tier
def test_the_device_benchmark_runs_a_configs_joint_step_on_synthetic_inputs(tmp_path: Path, capsys) -> None:
    """bench_training.py --device (what a GPU machine runs for train_paper.yaml), here on the CPU in fp16."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_training", REPO / "bench" / "bench_training.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    config = load_train_config(None, ["data.root=/unused", "batch_size=2", "precision=fp16", "steps=80000"])
    figures = bench.bench_device(Path("tiny.yaml"), config, torch.device("cpu"), steps=1, warmup=1)
    assert figures["step_s"] > 0 and figures["samples_per_s"] == pytest.approx(2 / figures["step_s"])
    assert figures["projected_hours"] == pytest.approx(80000 * figures["step_s"] / 3600)
    out = capsys.readouterr().out
    assert "precision fp16" in out and "peak resident memory" in out
    assert figures["peak_memory_gib"] > 0.1  # this process's peak RSS: torch alone holds more
