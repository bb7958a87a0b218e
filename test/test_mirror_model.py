"""MirrorModel (config, language features, checkpoints) and MirrorAgent (act / recognize / embeddings)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from mirror.agent import MirrorAgent
from mirror.alignment import AlignmentConfig
from mirror.model import CONFIG_NAME, WEIGHTS_NAME, MirrorConfig, MirrorConfigError, MirrorModel
from mirror.training.export import export_checkpoint
from mirror_common.errors import CheckpointError
from mirror_perception.demonstration import demonstration_clip
from mirror_perception.errors import InvalidVideoError
from mirror_policy.arp.preprocessing import PolicyInputError
from sim_bridge.actions import KeyframeAction
from sim_bridge.observation import CameraFrame

INSTRUCTIONS = ["push the maroon button", "push the red button", "open the top drawer"]
# Small enough to build in about a second; same module structure as cpu_tiny.
VICLIP_SMALL = {"vision_width": 64, "vision_layers": 1, "text_width": 64, "text_layers": 1, "embed_dim": 32}
ARP_SMALL = {"img_size": 32, "point_stride": 4, "mvt_view_layers": 1, "mvt_joint_layers": 1,
             "cross_layers": 1, "self_layers": 1, "mlp_dim": 64}  # fmt: skip


def small_model(seed: int = 0, **overrides) -> MirrorModel:
    torch.manual_seed(seed)
    return MirrorModel.from_names(
        instructions=INSTRUCTIONS, viclip_overrides=VICLIP_SMALL, arp_overrides=ARP_SMALL, **overrides
    )


@pytest.fixture(scope="module")
def model() -> MirrorModel:
    return small_model()


@pytest.fixture(scope="module")
def saved(model: MirrorModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("joint") / "ckpt"
    model.save_pretrained(directory, extra={"step": 7})
    return directory


@pytest.fixture(scope="module")
def sim_observation(bullet_env):
    info, observation = bullet_env.reset("push_buttons", 0, 0)
    return info, observation


# ------------------------------------------------------------------------------------------------ config
def test_config_forces_language_width_and_round_trips_through_json(model: MirrorModel) -> None:
    config = model.config
    assert config.arp.lang_dim == config.viclip.text_width == 64
    assert config.arp.max_lang_len >= config.viclip.context_length
    again = MirrorConfig.from_json(config.to_json())
    assert again.to_dict() == config.to_dict()
    assert isinstance(again.alignment, AlignmentConfig) and again.alignment.tau == 0.1
    assert again.instructions == INSTRUCTIONS


def test_config_rejects_inconsistent_settings() -> None:
    with pytest.raises(MirrorConfigError, match="clip_frames"):
        MirrorModel.from_names(clip_frames=4)
    with pytest.raises(MirrorConfigError, match="duplicate"):
        MirrorConfig(instructions=["a", "a"])
    with pytest.raises(MirrorConfigError, match="unknown"):
        MirrorConfig.from_dict({"viclip": "cpu_tiny", "colour": 1})
    with pytest.raises(MirrorConfigError, match="unknown from_names"):
        MirrorModel.from_names(vision_layers=2)


# ------------------------------------------------------------------------------------------- language
def test_language_features_are_causal_token_features_without_gradient(model: MirrorModel) -> None:
    feats, mask = model.language_features(["push the red button", "open the top drawer please now"])
    ids = model.tokenizer(["push the red button", "open the top drawer please now"], context_length=32)
    eot = ids.argmax(1)
    assert feats.shape == (2, int(eot.max()) + 1, 64) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == (eot + 1).tolist()
    assert not feats.requires_grad
    alone, alone_mask = model.language_features(["push the red button"])
    torch.testing.assert_close(alone[0], feats[0, : alone.shape[1]], rtol=1e-5, atol=1e-5)
    assert alone_mask.all()
    with pytest.raises(ValueError):
        model.language_features([])


# ---------------------------------------------------------------------------------------- checkpoints
def test_save_load_round_trip_is_exact(model: MirrorModel, saved: Path) -> None:
    loaded = MirrorModel.from_pretrained(saved)
    assert not loaded.training
    assert loaded.config.to_dict() == model.config.to_dict()
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    assert MirrorModel.read_extra(saved) == {"step": 7}


def test_saved_files_get_the_usual_permissions(model: MirrorModel, tmp_path: Path) -> None:
    """safetensors writes its file as 0600; a checkpoint must be as readable as any file its user writes."""
    umask = os.umask(0o022)
    try:
        model.save_pretrained(tmp_path / "m")
    finally:
        os.umask(umask)
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        assert (tmp_path / "m" / name).stat().st_mode & 0o777 == 0o644, name


def test_fp16_checkpoint_loads_to_float32(model: MirrorModel, tmp_path: Path) -> None:
    model.save_pretrained(tmp_path / "half", fp16=True)
    loaded = MirrorModel.from_pretrained(tmp_path / "half")
    weight = loaded.alignment.t_u.weight
    assert weight.dtype == torch.float32
    torch.testing.assert_close(weight, model.alignment.t_u.weight, rtol=1e-3, atol=1e-3)
    assert json.loads((tmp_path / "half" / CONFIG_NAME).read_text())["dtype"] == "float16"


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {f.name: (f.read_bytes(), os.stat(f).st_mtime_ns) for f in directory.iterdir()}


def test_corrupt_or_mismatched_checkpoints_fail_clearly_and_are_never_modified(
    model: MirrorModel, saved: Path, tmp_path: Path
) -> None:
    truncated = _copy(saved, tmp_path / "truncated")
    data = (truncated / WEIGHTS_NAME).read_bytes()
    (truncated / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])
    before = _snapshot(truncated)
    with pytest.raises(CheckpointError, match="cannot read"):
        MirrorModel.from_pretrained(truncated)
    assert _snapshot(truncated) == before

    bad_json = _copy(saved, tmp_path / "bad_json")
    (bad_json / CONFIG_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read"):
        MirrorModel.from_pretrained(bad_json)

    other = _copy(saved, tmp_path / "other_config")
    config = json.loads((other / CONFIG_NAME).read_text())
    config["model"]["alignment"]["shared_dim"] = 512  # weights have 1024-d heads
    (other / CONFIG_NAME).write_text(json.dumps(config))
    before = _snapshot(other)
    with pytest.raises(CheckpointError, match=r"alignment\.t_u\.weight"):
        MirrorModel.from_pretrained(other)
    assert _snapshot(other) == before

    mixed = _copy(saved, tmp_path / "mixed")
    small_model(seed=1).save_pretrained(tmp_path / "second")
    (mixed / WEIGHTS_NAME).write_bytes((tmp_path / "second" / WEIGHTS_NAME).read_bytes())
    with pytest.raises(CheckpointError, match="different saves"):
        MirrorModel.from_pretrained(mixed)

    with pytest.raises(CheckpointError, match="does not exist"):
        MirrorModel.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a MirrorModel checkpoint"):
        MirrorModel.from_pretrained(tmp_path / "empty")


# --------------------------------------------------------------------------------------------- agent
def test_act_on_a_simulator_observation_returns_a_valid_keyframe(saved: Path, sim_observation) -> None:
    info, observation = sim_observation
    agent = MirrorAgent.from_pretrained(saved)
    action, e = agent.act(observation, info.instruction, step=0)
    assert isinstance(action, KeyframeAction)
    assert np.isfinite(action.position).all() and abs(np.linalg.norm(action.quaternion) - 1) < 1e-6
    bounds = agent.model.config.arp.scene_bounds
    assert all(bounds[i] - 1e-6 <= action.position[i] <= bounds[i + 3] + 1e-6 for i in range(3))
    assert e.shape == (agent.model.config.arp.embed_dim,) and np.isfinite(e).all()
    again, e_again = agent.act(observation, info.instruction, step=0)
    np.testing.assert_array_equal(again.to_vector(), action.to_vector())
    np.testing.assert_array_equal(e_again, e)


def test_act_refuses_missing_cameras_and_wrong_image_sizes(model: MirrorModel, sim_observation) -> None:
    info, observation = sim_observation
    agent = MirrorAgent(model)
    cameras = dict(observation.cameras)
    del cameras["wrist"]
    with pytest.raises(PolicyInputError, match="wrist"):
        agent.act(type(observation)(**{**observation.__dict__, "cameras": cameras}), info.instruction, 0)
    front = observation.cameras["front"]
    small = CameraFrame(front.rgb[::2, ::2], front.depth[::2, ::2], front.mask[::2, ::2], front.intrinsics,
                        front.extrinsics, front.near, front.far)  # fmt: skip
    cameras = {**observation.cameras, "front": small}
    with pytest.raises(PolicyInputError, match="front"):
        agent.act(type(observation)(**{**observation.__dict__, "cameras": cameras}), info.instruction, 0)
    with pytest.raises(ValueError):
        agent.act(observation, "  ", 0)


def test_recognize_ranks_the_whole_vocabulary_by_cosine_similarity(
    model: MirrorModel, sim_observation
) -> None:
    _, observation = sim_observation
    agent = MirrorAgent(model)
    rng = np.random.default_rng(0)
    video = np.stack([observation.cameras["front"].rgb] * 11)
    video = np.clip(video.astype(int) + rng.integers(-20, 20, video.shape), 0, 255).astype(np.uint8)
    ranking = agent.recognize(video, top_k=10)
    assert sorted(name for name, _ in ranking) == sorted(INSTRUCTIONS)
    scores = [score for _, score in ranking]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores)
    # the same ranking from the public pieces: u, then cosine with the text embeddings
    u = torch.from_numpy(agent.video_embedding(video))
    with torch.no_grad():
        text = model.viclip.encode_text(model.tokenizer(INSTRUCTIONS, context_length=32))
    cosine = torch.nn.functional.normalize(u, dim=0) @ text.t()
    expected = [INSTRUCTIONS[i] for i in cosine.argsort(descending=True).tolist()]
    assert [name for name, _ in ranking] == expected
    top1 = agent.recognize(video, top_k=1, instructions=INSTRUCTIONS[:2])
    assert len(top1) == 1 and top1[0][0] in INSTRUCTIONS[:2]
    probabilities = agent.recognize(video, top_k=3, probabilities=True)
    assert abs(sum(p for _, p in probabilities) - 1.0) < 1e-4
    with pytest.raises(InvalidVideoError):
        agent.recognize(video.astype(np.float32))
    with pytest.raises(InvalidVideoError):
        agent.recognize(video[:0])


def test_clip_sampling_takes_segment_middles() -> None:
    video = np.arange(16, dtype=np.uint8)[:, None, None, None] * np.ones((16, 2, 2, 3), dtype=np.uint8)
    clip = demonstration_clip(video, 8)
    assert clip[:, 0, 0, 0].tolist() == [0, 2, 4, 6, 8, 10, 12, 14]
    short = demonstration_clip(video[:3], 8)
    assert short[:, 0, 0, 0].tolist() == [0, 1, 2, 2, 2, 2, 2, 2]


def test_aligned_embeddings_are_the_normalised_heads(model: MirrorModel) -> None:
    agent = MirrorAgent(model)
    rng = np.random.default_rng(1)
    u, e = (
        rng.normal(size=32).astype(np.float32),
        rng.normal(size=model.config.arp.embed_dim).astype(np.float32),
    )
    z_u, z_e = agent.aligned_embeddings(u, e)
    assert z_u.shape == z_e.shape == (1024,)
    assert abs(np.linalg.norm(z_u) - 1) < 1e-5 and abs(np.linalg.norm(z_e) - 1) < 1e-5
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.alignment.t_u(torch.from_numpy(u)), dim=0).numpy()
    np.testing.assert_allclose(z_u, expected, rtol=1e-5, atol=1e-6)
    batch_u, batch_e = agent.aligned_embeddings(np.stack([u, u]), np.stack([e, e]))
    assert batch_u.shape == (2, 1024) and batch_e.shape == (2, 1024)
    with pytest.raises(ValueError):
        agent.aligned_embeddings(u[:5], e)


def test_export_writes_an_fp16_copy_with_provenance_and_never_overwrites_its_source(
    model: MirrorModel, saved: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    _copy(saved, run / "final")
    (run / "metrics.jsonl").write_text(
        '{"step": 2, "held_out/recognition_top1": 0.0, "held_out/position_error_m": 0.2}\n'
        '{"step": 5, "held_out/recognition_top1": 0.25}\n{"step": 6, "loss/total": 1.0}\n{"step": 7, "held_'
    )
    (run / "split.json").write_text('{"held_out": []}')
    (run / "train.log").write_text("2026-12-06 13:06:13,372 INFO train_joint: run directory run\n")
    before = _snapshot(run / "final")
    out = export_checkpoint(run, tmp_path / "shipped", command="train_joint --steps 7")
    assert _snapshot(run / "final") == before
    extra = MirrorModel.read_extra(out)
    assert extra["train_command"] == "train_joint --steps 7"
    assert extra["step"] == 7 and extra["dtype"] == "float16"
    assert extra["held_out_metrics"] == {"step": 5, "held_out/recognition_top1": 0.25}
    assert (out / "split.json").read_text() == '{"held_out": []}'
    assert (out / "train.log").read_text() == (run / "train.log").read_text()
    assert (out / "training_curve.csv").read_text().splitlines() == [
        "step,position_error_m,recognition_top1",
        "2,0.2,0.0",
        "5,,0.25",
    ]
    with safe_open(str(out / WEIGHTS_NAME), "pt") as weights:
        dtypes = {weights.get_tensor(k).dtype for k in weights.keys()}  # noqa: SIM118 (safe_open API)
    assert torch.float16 in dtypes and torch.float32 not in dtypes
    exported = MirrorModel.from_pretrained(out)
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(exported.state_dict()[key], value, atol=1e-3, rtol=1e-3), key
    with pytest.raises(ValueError, match="source model directory"):
        export_checkpoint(run, run / "final")
    with pytest.raises(FileNotFoundError, match="finished train_joint run"):
        export_checkpoint(tmp_path / "nothing_here", tmp_path / "x")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_act_and_recognize_under_autocast_stay_close_to_float32(saved: Path, sim_observation, precision):
    info, observation = sim_observation
    reference = MirrorAgent.from_pretrained(saved)
    lowered = MirrorAgent.from_pretrained(saved, precision=precision)
    assert all(p.dtype == torch.float32 for p in lowered.model.parameters())  # weights stay float32
    action, e = reference.act(observation, info.instruction, step=0)
    action_low, e_low = lowered.act(observation, info.instruction, step=0)
    assert np.linalg.norm(action_low.position - action.position) < 0.05  # 5 cm, two 64^2 heatmap stages
    assert np.allclose(e_low, e, atol=0.1) and e_low.dtype == np.float32
    video = np.stack([observation.camera(reference.config.camera_for_video).rgb] * 12)
    scores = dict(reference.recognize(video, top_k=len(INSTRUCTIONS)))
    scores_low = dict(lowered.recognize(video, top_k=len(INSTRUCTIONS)))
    assert all(abs(scores_low[name] - score) < 0.02 for name, score in scores.items())
    with pytest.raises(ValueError, match="precision must be one of"):
        MirrorAgent(reference.model, precision="tf32")
