"""ViCLIP: golden outputs, official key layout and strict loading, masking, text pooling, tokenizer,
save/load, clip sampling, and recognition after a short training run."""

from __future__ import annotations

import gzip
import json
import sys
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from mirror_perception import (
    ClipTokenizer,
    ConfigError,
    InstructionRecognizer,
    InvalidTokensError,
    InvalidVideoError,
    StateDictMismatchError,
    ViCLIP,
    ViCLIPCheckpointError,
    ViCLIPConfig,
    check_state_dict,
    get_config,
    infer_official_config,
    load_official_checkpoint,
    load_pretrained,
    model_from_official_state_dict,
    prepare_video,
    read_checkpoint_file,
    resize_position_tables,
    sample_clip_indices,
    save_pretrained,
    video_text_contrastive_loss,
)
from mirror_perception.modeling_viclip import random_keep_indices
from mirror_perception.tokenizer import DEFAULT_VOCAB_PATH, split_words
from mirror_perception.transformer_layers import Transformer
from mirror_perception.weights import expected_shapes, load_state_dict_strict

ROOT = Path(__file__).resolve().parents[1]
KEYS_DIR = ROOT / "test" / "data" / "viclip_keys"  # key names and shapes of the released checkpoints
KEY_FILES = {"ViCLIP-B/16": "keys_ViCLIP-B16.txt", "ViCLIP-L/14": "keys_ViCLIP-L14.txt"}
GOLDEN_TOL = 1e-5


def official_key_shapes(name: str) -> list[tuple[str, tuple[int, ...]]]:
    """The key list of an official checkpoint as recorded from the upstream model (facts: names and
    shapes, kept as test data)."""
    path = KEYS_DIR / KEY_FILES[name]
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split("\t")
        rows.append((key, tuple(json.loads(shape))))
    return rows


def micro_config(**overrides) -> ViCLIPConfig:
    """An even smaller model than cpu_tiny, for tests of plumbing rather than of learning."""
    sizes = {
        "name": "micro",
        "vision_width": 32,
        "vision_layers": 1,
        "vision_heads": 2,
        "text_width": 32,
        "text_layers": 1,
        "text_heads": 2,
        "embed_dim": 16,
        "input_size": 32,
        "patch_size": 16,
        "masking_ratio": 0.5,
    }
    sizes.update(overrides)
    return replace(get_config("cpu_tiny"), **sizes)


@pytest.fixture(scope="module")
def tokenizer() -> ClipTokenizer:
    return ClipTokenizer()


@pytest.fixture(scope="module")
def tiny_model() -> ViCLIP:
    torch.manual_seed(0)
    return ViCLIP(get_config("cpu_tiny")).eval()


@pytest.fixture(scope="module")
def synthetic_b16_state() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {k: torch.randn(shape, generator=generator) for k, shape in official_key_shapes("ViCLIP-B/16")}


# ------------------------------------------------------------------------------------------------ golden
def test_golden_outputs_of_seeded_cpu_tiny_model(golden):
    stored, current = golden("viclip")
    assert set(stored) == set(current)
    assert torch.equal(stored["token_ids"], current["token_ids"]), "tokenizer output drifted"
    assert torch.equal(stored["input_checksum"], current["input_checksum"]), (
        "seeded input changed (torch RNG?)"
    )
    assert torch.allclose(stored["param_checksum"], current["param_checksum"], rtol=1e-9, atol=1e-6), (
        "seeded cpu_tiny initialisation changed"
    )
    for key in ("video_features", "video_embeds", "text_embeds", "logits_per_video"):
        drift = (stored[key] - current[key]).abs().max().item()
        assert drift <= GOLDEN_TOL, f"ViCLIP {key} drifted from the golden file by {drift:.3e} > {GOLDEN_TOL}"


# -------------------------------------------------------------------------------------- official layout
@pytest.mark.parametrize("name", ["ViCLIP-B/16", "ViCLIP-L/14"])
def test_official_presets_reproduce_checkpoint_keys_and_shapes(name):
    want = official_key_shapes(name)
    assert list(expected_shapes(get_config(name)).items()) == want  # same keys, same order, same shapes
    total = sum(int(np.prod(s)) for _, s in want)
    assert total == {"ViCLIP-B/16": 149_603_841, "ViCLIP-L/14": 427_590_145}[name]


def test_loader_accepts_synthetic_official_b16_state_dict(synthetic_b16_state):
    wrapped = {"model": {f"module.{k}": v for k, v in synthetic_b16_state.items()}, "epoch": 9}
    model = model_from_official_state_dict(wrapped)
    assert model.config.name == "ViCLIP-B/16"
    assert not model.training
    loaded = model.state_dict()
    assert list(loaded) == list(synthetic_b16_state)
    for key in ("temp", "vision_encoder.conv1.weight", "text_encoder.token_embedding.weight"):
        assert torch.equal(loaded[key], synthetic_b16_state[key])
    assert all(not p.is_meta for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_loader_rejects_wrong_shape_missing_and_extra_keys(synthetic_b16_state):
    config = get_config("ViCLIP-B/16")
    bad_shape = dict(synthetic_b16_state)
    bad_shape["vision_encoder.proj"] = torch.zeros(768, 768)
    with pytest.raises(
        StateDictMismatchError, match=r"'ViCLIP-B/16'.*vision_encoder\.proj.*\[768, 768\].*\[768, 512\]"
    ):
        check_state_dict(bad_shape, config)
    missing = {k: v for k, v in synthetic_b16_state.items() if k != "text_encoder.ln_final.bias"}
    with pytest.raises(
        StateDictMismatchError, match=r"1 missing key\(s\): text_encoder\.ln_final\.bias"
    ) as err:
        model_from_official_state_dict(missing, config)
    assert err.value.missing == ["text_encoder.ln_final.bias"] and not err.value.unexpected
    extra = dict(synthetic_b16_state, **{"vision_encoder.head.weight": torch.zeros(3)})
    with pytest.raises(StateDictMismatchError, match=r"1 unexpected key\(s\): vision_encoder\.head\.weight"):
        model_from_official_state_dict(extra, config)
    # a B/16 dict checked against L/14 names the config and reports the size differences
    with pytest.raises(StateDictMismatchError, match="'ViCLIP-L/14'") as err:
        check_state_dict(synthetic_b16_state, get_config("ViCLIP-L/14"))
    assert err.value.missing and err.value.mismatched


def test_infer_and_resize_official_positions(synthetic_b16_state):
    assert infer_official_config(synthetic_b16_state).name == "ViCLIP-B/16"
    small = get_config("ViCLIP-B/16", input_size=128, num_frames=4)
    resized = resize_position_tables(synthetic_b16_state, small)
    check_state_dict(resized, small)
    table = resized["vision_encoder.positional_embedding"]
    assert torch.equal(
        table[0], synthetic_b16_state["vision_encoder.positional_embedding"][0]
    )  # CLS row kept
    temporal = resized["vision_encoder.temporal_positional_embedding"]
    original = synthetic_b16_state["vision_encoder.temporal_positional_embedding"]
    assert torch.equal(temporal, original[:, :4])  # fewer frames: truncated, as upstream
    longer = resize_position_tables(synthetic_b16_state, get_config("ViCLIP-B/16", num_frames=15))
    stretched = longer["vision_encoder.temporal_positional_embedding"]  # more: linear, ends kept
    assert stretched.shape[1] == 15 and torch.allclose(stretched[:, 0], original[:, 0])
    assert torch.allclose(stretched[:, 1], (original[:, 0] + original[:, 1]) / 2, atol=1e-6)
    assert torch.allclose(stretched[:, 2], original[:, 1], atol=1e-6)
    assert torch.allclose(stretched[:, -1], original[:, -1])
    with pytest.raises(ViCLIPCheckpointError, match="cannot identify"):
        infer_official_config({"temp": torch.tensor(0.01)})


def test_checkpoint_files_with_wrappers_prefixes_and_pickled_config(tmp_path):
    config = micro_config()
    torch.manual_seed(3)
    state = ViCLIP(config).state_dict()

    # a .pth that also pickles the training config as an object of a module that no longer exists
    fake = types.ModuleType("viclip_training_utils")

    class EasyDict(dict):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.__dict__.update(kw)

    EasyDict.__module__, EasyDict.__qualname__ = fake.__name__, "EasyDict"
    fake.EasyDict = EasyDict
    sys.modules[fake.__name__] = fake
    try:
        pth = tmp_path / "official.pth"
        torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "config": EasyDict(lr=4e-4)}, pth)
    finally:
        del sys.modules[fake.__name__]
    loaded = read_checkpoint_file(
        pth
    )  # torch.load(weights_only=True) with the unknown class read as a mapping
    assert list(loaded) == list(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    model = load_official_checkpoint(pth, config)
    assert torch.equal(model.vision_encoder.proj, state["vision_encoder.proj"])

    st = tmp_path / "model.safetensors"
    save_file({f"_orig_mod.{k}": v.contiguous() for k, v in state.items()}, str(st))
    from_st = read_checkpoint_file(st)  # safetensors stores keys sorted; order does not matter for loading
    assert sorted(from_st) == sorted(state) and all(torch.equal(from_st[k], state[k]) for k in state)

    with pytest.raises(ViCLIPCheckpointError, match="not found"):
        read_checkpoint_file(tmp_path / "absent.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(ViCLIPCheckpointError, match="cannot read"):
        read_checkpoint_file(tmp_path / "junk.pth")
    torch.save({"model": {"x": 1}}, tmp_path / "nontensor.pth")
    with pytest.raises(ViCLIPCheckpointError, match="not tensors"):
        read_checkpoint_file(tmp_path / "nontensor.pth")


# ------------------------------------------------------------------------------------------------- model
def _capture_transformer_lengths(model: ViCLIP) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    lengths: list[int] = []
    handle = model.vision_encoder.transformer.register_forward_hook(
        lambda m, i, o: lengths.append(o.shape[1])
    )
    return lengths, handle


def test_masking_happens_only_in_training_mode():
    torch.manual_seed(1)
    model = ViCLIP(micro_config(masking_ratio=0.5))  # 4 patches x 8 frames = 32 patch tokens
    frames = torch.randint(0, 256, (2, 8, 32, 32, 3), dtype=torch.uint8)
    lengths, handle = _capture_transformer_lengths(model)
    try:
        model.eval()
        with torch.no_grad():
            a, b = model.encode_video(frames), model.encode_video(frames)
        assert torch.equal(a, b) and lengths == [33, 33]
        model.train()
        lengths.clear()
        c, d = model.encode_video(frames), model.encode_video(frames)
        assert lengths == [1 + 16, 1 + 16]
        assert not torch.allclose(c, d)  # a fresh random mask each call
        model.masking_ratio = 0.0
        lengths.clear()
        model.encode_video(frames)
        assert lengths == [33]
    finally:
        handle.remove()
    keep = random_keep_indices(3, 20, 0.9, torch.device("cpu"))
    assert keep.shape == (3, 20 - 18)
    assert all(torch.equal(row, row.sort().values) and len(set(row.tolist())) == 2 for row in keep)


def test_masking_keeps_the_tokens_upstream_keeps():
    """Upstream masks the first int(ratio * L) tokens of argsort(noise) and keeps the rest in order. Seed 0
    draws noise [0.4963, 0.7682, 0.0885, 0.1320, 0.3074]: argsort [2, 3, 4, 0, 1], 2 of 5 masked -> keep
    tokens 0, 1 and 4 (the lowest-noise rule kept 2, 3, 4)."""
    keep = random_keep_indices(1, 5, 0.4, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert keep.tolist() == [[0, 1, 4]]


def test_a_single_image_gets_the_mean_temporal_embedding():
    torch.manual_seed(3)
    model = ViCLIP(micro_config()).eval()
    encoder = model.vision_encoder
    image = model.preprocess_video(torch.randint(0, 256, (1, 1, 32, 32, 3), dtype=torch.uint8))
    with torch.no_grad():
        encoder.temporal_positional_embedding.normal_()
        with_time = encoder.embed_tokens(image)
        mean = encoder.temporal_positional_embedding.mean(dim=1)  # (1, D)
        encoder.temporal_positional_embedding.zero_()
        without_time = encoder.embed_tokens(image)
    assert with_time.shape == (1, 4, micro_config().vision_width)  # 4 patches of one frame
    assert torch.allclose(with_time - without_time, mean.expand_as(with_time), atol=1e-6)
    assert model.encode_video(image).shape == (1, micro_config().embed_dim)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_block_equals_torch_multihead_attention(causal):
    """Our packed q/k/v layout computes what nn.MultiheadAttention (upstream's module) computes."""
    torch.manual_seed(5)
    stack = Transformer(width=32, layers=1, heads=4)
    stack.init_clip_weights()
    block = stack.resblocks[0]
    reference = torch.nn.MultiheadAttention(32, 4)
    reference.load_state_dict(block.attn.state_dict())
    x = torch.randn(2, 7, 32)
    mask = torch.full((7, 7), float("-inf")).triu_(1) if causal else None
    with torch.no_grad():
        ours = block.attn(x, causal=causal)
        theirs = reference(*(x.transpose(0, 1),) * 3, need_weights=False, attn_mask=mask)[0].transpose(0, 1)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_video_tokens_are_patch_major_with_space_and_time_embeddings():
    torch.manual_seed(6)
    config = micro_config(input_size=32, patch_size=16)  # 2x2 grid
    encoder = ViCLIP(config).vision_encoder
    with torch.no_grad():
        encoder.temporal_positional_embedding.normal_()
        video = torch.randn(2, 8, 3, 32, 32)
        tokens = encoder.embed_tokens(video)
    weight = encoder.conv1.weight[:, :, 0]  # (D, 3, P, P)
    assert tokens.shape == (2, 4 * 8, config.vision_width)
    for b, row, col, t in [(0, 0, 0, 0), (1, 0, 1, 3), (0, 1, 0, 7), (1, 1, 1, 5)]:
        n = row * 2 + col
        patch = video[b, t, :, row * 16 : (row + 1) * 16, col * 16 : (col + 1) * 16]
        expected = (
            torch.einsum("dcij,cij->d", weight, patch)
            + encoder.positional_embedding[1 + n]
            + encoder.temporal_positional_embedding[0, t]
        )
        assert torch.allclose(tokens[b, n * 8 + t], expected, atol=1e-4)


def test_video_input_forms_and_errors():
    config = micro_config()
    torch.manual_seed(2)
    model = ViCLIP(config).eval()
    frames = torch.randint(0, 256, (1, 8, 32, 32, 3), dtype=torch.uint8)
    normalised = prepare_video(frames, config)
    assert normalised.shape == (1, 8, 3, 32, 32)
    expected = (frames[0, 0, 0, 0, 0].item() / 255 - 0.485) / 0.229  # ImageNet statistics, not CLIP's
    assert normalised[0, 0, 0, 0, 0].item() == pytest.approx(expected, abs=1e-6)
    with torch.no_grad():
        assert torch.allclose(model.encode_video(frames), model.encode_video(normalised), atol=1e-6)
        big = frames.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # 64x64 is resized to 32x32
        assert model.encode_video(big.numpy()).shape == (1, config.embed_dim)
        emb = model.encode_video(frames)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(1))
    with pytest.raises(InvalidVideoError, match=r"exactly 8 frames per clip \(or 1, an image\)"):
        model.encode_video(frames[:, :7])
    with pytest.raises(InvalidVideoError, match="5 dims"):
        model.encode_video(frames[0])
    with pytest.raises(InvalidVideoError, match="normalised"):
        model.encode_video(torch.zeros(1, 8, 3, 64, 64))
    with pytest.raises(InvalidVideoError, match="NaN"):
        model.encode_video(torch.full((1, 8, 3, 32, 32), float("nan")))
    with pytest.raises(InvalidVideoError, match="uint8 or floating"):
        model.encode_video(frames.to(torch.int32))


def test_text_pooling_takes_the_end_of_text_position(tiny_model, tokenizer):
    ids = tokenizer(["push the maroon button", "open the drawer"])
    eot = (ids == tokenizer.eot_token_id).int().argmax(dim=1)
    assert torch.equal(tiny_model.text_encoder.pooling_positions(ids), eot)
    with torch.no_grad():
        pooled = tiny_model.encode_text(ids, normalize=False)
        tokens = tiny_model.text_encoder.token_features(ids)
        manual = tokens[torch.arange(2), eot] @ tiny_model.text_encoder.text_projection
        assert torch.allclose(pooled, manual, atol=1e-6)
        assert not torch.allclose(pooled, tokens[:, -1] @ tiny_model.text_encoder.text_projection, atol=1e-3)
        # causal: what follows the end token cannot change the embedding; what precedes it does
        after = ids.clone()
        after[0, eot[0] + 1 :] = 1000
        assert torch.allclose(tiny_model.encode_text(after), tiny_model.encode_text(ids), atol=1e-6)
        before = ids.clone()
        before[0, 2] = 1000
        assert not torch.allclose(
            tiny_model.encode_text(before)[0], tiny_model.encode_text(ids)[0], atol=1e-4
        )
    with pytest.raises(InvalidTokensError, match="1..32"):
        tiny_model.encode_text(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(InvalidTokensError, match="outside"):
        tiny_model.encode_text(torch.full((1, 4), 49408))


def test_contrastive_loss_is_symmetric_infonce_with_learned_temperature():
    torch.manual_seed(4)
    model = ViCLIP(micro_config(temperature_init=0.05)).train()
    frames = torch.randint(0, 256, (3, 8, 32, 32, 3), dtype=torch.uint8)
    ids = ClipTokenizer()(["a", "b", "c"])
    out = model(frames, ids)
    assert out.logits_per_video.shape == (3, 3) and torch.equal(out.logits_per_text, out.logits_per_video.t())
    cos = out.video_embeds @ out.text_embeds.t()
    assert torch.allclose(out.logits_per_video, cos / 0.05, atol=1e-5)
    target = torch.arange(3)
    ce = torch.nn.functional.cross_entropy
    manual = 0.5 * (ce(out.logits_per_video, target) + ce(out.logits_per_video.t(), target))
    assert torch.allclose(out.loss, manual, atol=1e-6)
    out.loss.backward()
    assert model.temp.grad is not None and model.temp.grad.abs() > 0
    # with match ids, pairs sharing an instruction are all positives (ViCLIP's idx-based VTC targets)
    same = torch.tensor([0, 0, 1, 1])
    block = 20.0 * (same[:, None] == same[None, :]).float()
    diagonal = 20.0 * torch.eye(4)
    assert video_text_contrastive_loss(block, same).item() == pytest.approx(np.log(2), abs=1e-6)
    assert video_text_contrastive_loss(diagonal, same) > 5.0  # a shared-instruction partner is not a negative
    assert video_text_contrastive_loss(diagonal).item() == pytest.approx(0.0, abs=1e-6)
    model.set_temperature(0.02)
    assert model.logit_scale.item() == pytest.approx(50.0)
    with torch.no_grad():
        model.temp.fill_(0.001)  # below the floor: clamped to temperature_min, as ViCLIP does
    assert model.logit_scale.item() == pytest.approx(1 / model.config.temperature_min)
    with pytest.raises(InvalidTokensError, match="one text per clip"):
        model(frames, ids[:2])


# ------------------------------------------------------------------------------------------------ config
def test_config_presets_json_and_validation():
    for name in ("cpu_tiny", "ViCLIP-B/16", "ViCLIP-L/14"):
        config = get_config(name)
        assert ViCLIPConfig.from_json(config.to_json()) == config
        assert config.num_frames == 8 and config.context_length == 32
    tiny = get_config("cpu_tiny")
    assert tiny.input_size == 128 and tiny.num_video_tokens == 1 + 8 * 64
    assert get_config("ViCLIP-B/16").embed_dim == 512 and get_config("ViCLIP-L/14").embed_dim == 768
    assert get_config("ViCLIP-B/16").image_mean == (0.485, 0.456, 0.406)
    with pytest.raises(ConfigError, match="unknown ViCLIP config"):
        get_config("ViCLIP-H/14")
    renamed = get_config("cpu_tiny", name="cpu_tiny_wide", vision_width=256, vision_heads=4)
    assert (renamed.name, renamed.vision_width) == ("cpu_tiny_wide", 256)  # every field, name included
    with pytest.raises(ConfigError, match="unknown ViCLIPConfig field"):
        ViCLIPConfig.from_dict({**tiny.to_dict(), "dropout": 0.1})
    with pytest.raises(ConfigError, match="not divisible"):
        get_config("cpu_tiny", input_size=100)
    with pytest.raises(ConfigError, match="masking_ratio"):
        get_config("cpu_tiny", masking_ratio=1.0)
    with pytest.raises(ConfigError, match="heads"):
        get_config("cpu_tiny", vision_heads=3)


# --------------------------------------------------------------------------------------------- tokenizer
def test_tokenizer_ids_match_the_clip_vocabulary(tokenizer):
    # Known CLIP ids, derived from the vocabulary file: 'a</w>' is byte 'a' (the 65th printable byte
    # symbol) in the </w> block, 256 + 64 = 320; merged tokens have id 512 + the rank of their merge rule.
    assert tokenizer("a photo of a cat")[0, :8].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407, 0]
    with gzip.open(DEFAULT_VOCAB_PATH, "rt", encoding="utf-8") as handle:
        merges = handle.read().split("\n")[1 : 48894 + 1]
    assert (
        merges[1125 - 512] == "pho to</w>"
        and merges[539 - 512] == "o f</w>"
        and merges[2368 - 512] == "c at</w>"
    )
    assert tokenizer.vocab_size == 49408
    assert (tokenizer.sot_token_id, tokenizer.eot_token_id, tokenizer.pad_token_id) == (49406, 49407, 0)


def test_tokenizer_cleaning_splitting_truncation(tokenizer):
    assert split_words("it's 2 dogs' toys!!") == ["it", "'s", "2", "dogs", "'", "toys", "!!"]
    assert split_words("123 café") == ["1", "2", "3", "café"]
    assert tokenizer.encode("A  Photo\tof a CAT") == tokenizer.encode("a photo of a cat")
    assert tokenizer.encode("it’s") == tokenizer.encode("it's")  # curly quote straightened as ftfy does
    assert tokenizer.encode("a &amp; b") == tokenizer.encode("a & b")
    text = "take the steak off the grill"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.decode(tokenizer.encode("naïve 東京")) == "naïve 東京"
    long = tokenizer(["push " * 50, "stack 2 maroon blocks"], context_length=32)
    assert long.shape == (2, 32) and long.dtype == torch.long
    assert long[0, 0] == 49406 and long[0, -1] == 49407 and (long[0, 1:-1] != 49407).all()
    short_eot = int((long[1] == 49407).nonzero()[0, 0])
    assert (long[1, short_eot + 1 :] == 0).all()


# ------------------------------------------------------------------------------------------- save/load
def test_save_load_round_trip(tmp_path, tiny_model):
    directory = save_pretrained(tiny_model, tmp_path / "ckpt")
    assert sorted(p.name for p in directory.iterdir()) == [
        "config.json",
        "model.safetensors",
    ]  # no temp files
    restored = load_pretrained(directory)
    assert restored.config == tiny_model.config and not restored.training
    original = tiny_model.state_dict()
    assert all(torch.equal(v, original[k]) for k, v in restored.state_dict().items())
    frames = torch.randint(0, 256, (1, 8, 128, 128, 3), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(restored.encode_video(frames), tiny_model.encode_video(frames))

    torch.manual_seed(9)
    fresh = ViCLIP(get_config("cpu_tiny"))
    load_state_dict_strict(fresh, load_file(str(directory / "model.safetensors")))  # in place, e.g. resume
    assert torch.equal(fresh.vision_encoder.proj, tiny_model.vision_encoder.proj)

    # weights that do not fit the config next to them are refused with the config named
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "config.json").write_text(get_config("cpu_tiny", embed_dim=64).to_json())
    (wrong / "model.safetensors").write_bytes((directory / "model.safetensors").read_bytes())
    with pytest.raises(StateDictMismatchError, match="'cpu_tiny'.*vision_encoder.proj"):
        load_pretrained(wrong)
    (wrong / "config.json").write_text("{not json")
    with pytest.raises(ViCLIPCheckpointError, match="not a valid ViCLIP config"):
        load_pretrained(wrong)
    with pytest.raises(ViCLIPCheckpointError, match="cannot read"):
        load_pretrained(tmp_path / "absent")


# --------------------------------------------------------------------------------------- clip sampling
def test_clip_sampler_segments():
    assert sample_clip_indices(16, 8, "uniform") == [0, 2, 4, 6, 8, 10, 12, 14]
    assert sample_clip_indices(80, 8, "uniform") == [4, 14, 24, 34, 44, 54, 64, 74]
    assert sample_clip_indices(5, 8, "uniform") == [0, 1, 2, 3, 4, 4, 4, 4]  # short video: pad with the last
    rng = np.random.default_rng(0)
    draws = np.array([sample_clip_indices(20, 8, "random", rng) for _ in range(400)])
    bounds = (np.arange(9) * 20) // 8  # segments [0,2) [2,5) [5,7) ...
    for i in range(8):
        assert set(draws[:, i]) == set(
            range(bounds[i], bounds[i + 1])
        )  # every frame of its segment, no other
    again = sample_clip_indices(20, 8, "random", np.random.default_rng(7))
    assert again == sample_clip_indices(20, 8, "random", np.random.default_rng(7))
    with pytest.raises(ValueError, match="mode"):
        sample_clip_indices(20, 8, "middle")
    with pytest.raises(ValueError, match="positive"):
        sample_clip_indices(0, 8)


# ----------------------------------------------------------------------------------------- recognition
MOVING_BLOCKS = (
    ("push the red block to the right", (220, 30, 30), (1, 0)),
    ("slide the green block down", (30, 200, 30), (0, 1)),
    ("move the blue block to the left", (30, 30, 220), (-1, 0)),
)


def moving_block_clip(color, direction, rng, size=128, side=32, speed=8, frames=8) -> np.ndarray:
    """A coloured square crossing a grey 128x128 frame, 8 frames, from a random start position."""
    clip = np.full((frames, size, size, 3), 110, np.uint8)
    travel = speed * (frames - 1)
    start = []
    for d in direction:
        low, high = (travel, size - side) if d < 0 else (0, size - side - travel * d)
        start.append(int(rng.integers(low, high + 1)))
    for t in range(frames):
        x, y = start[0] + direction[0] * speed * t, start[1] + direction[1] * speed * t
        clip[t, y : y + side, x : x + side] = color
    return clip


def test_recognizer_picks_the_trained_instruction(tokenizer):
    torch.manual_seed(0)
    model = ViCLIP(get_config("cpu_tiny"))
    model.text_encoder.requires_grad_(False)  # as in ViCLIP pre-training: fixed text targets
    instructions = [name for name, _, _ in MOVING_BLOCKS]
    token_ids = tokenizer(instructions)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=5e-4, weight_decay=0.0
    )
    rng = np.random.default_rng(0)
    model.train()
    losses = []
    for _ in range(12):
        clips = np.stack([moving_block_clip(color, d, rng) for _, color, d in MOVING_BLOCKS])
        out = model(torch.from_numpy(clips), token_ids)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.3 * losses[0], losses

    recognizer = InstructionRecognizer(model, tokenizer, reversed(instructions))
    assert model.training  # the recognizer switched to eval internally and restored the mode
    test_rng = np.random.default_rng(100)  # unseen start positions
    for name, color, direction in MOVING_BLOCKS:
        ranked = recognizer.recognize(moving_block_clip(color, direction, test_rng), top_k=3)
        assert [r[0] for r in ranked][0] == name, ranked
        assert len(ranked) == 3 and ranked[0][1] > ranked[1][1] >= ranked[2][1]
    batch = np.stack([moving_block_clip(c, d, test_rng) for _, c, d in MOVING_BLOCKS])
    probs = recognizer.recognize_batch(batch, top_k=1, probabilities=True)
    assert [p[0][0] for p in probs] == instructions and all(0.0 < p[0][1] <= 1.0 for p in probs)
    with pytest.raises(InvalidVideoError, match="one clip"):
        recognizer.recognize(batch)
    with pytest.raises(ValueError, match="duplicate"):
        InstructionRecognizer(model, tokenizer, ["a", "a"])
