"""train_joint: config loading, sample formation, the joint step (AU schedule, baseline, probing), exact
resume, clear errors, checkpoints and a 2-process gloo run, on a tiny dataset recorded with the simulator."""

from __future__ import annotations

import json
import math
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mirror_test_data import SMALL, build_tiny_dataset, train_cli

from mirror.agent import MirrorAgent
from mirror.model import MirrorModel
from mirror.training.config import TrainConfigError, load_train_config, parse_override
from mirror.training.data import (
    STREAM_MODEL,
    EpisodeEntry,
    TrainingDataError,
    form_transitions,
    scan_episodes,
    split_episodes,
    step_seed,
    target_action,
)
from mirror.training.distributed import DistInfo
from mirror.training.lamb import Lamb
from mirror.training.optim import lr_factor
from mirror.training.train_joint import main
from mirror.training.trainer import MirrorTrainer, is_au_step
from mirror_common.errors import CheckpointError
from mirror_policy.arp.preprocessing import PolicyInputError
from sim_bridge.dataset import EpisodeRecord, RLBenchDataset, load_episode

REPO = Path(__file__).resolve().parents[1]
CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def data_root() -> Path:
    return build_tiny_dataset()


def small_config(data_root: Path, out: Path, *extra: str):
    return load_train_config(None, [*SMALL, f"data.root={data_root}", f"out={out}", *extra])


def params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.named_parameters())


# ------------------------------------------------------------------------------------------------ config
def test_config_file_overrides_and_flags_are_applied_in_order(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "steps: 10\nbatch_size: 4\noptim:\n  video_lr: 2.0e-4\narp:\n  preset: cpu_tiny\n  cross_layers: 3\n"
    )
    config = load_train_config(
        path, ["steps=20", "arp.self_layers=3", "alignment.pairing=episode"], {"seed": 5}
    )
    assert (config.steps, config.batch_size, config.seed, config.optim.video_lr) == (20, 4, 5, 2e-4)
    joint = config.model_config(["a", "b"])
    assert (joint.arp.cross_layers, joint.arp.self_layers, joint.alignment.pairing) == (3, 3, "episode")
    assert parse_override("optim.arp_betas=[0.9, 0.99]") == (["optim", "arp_betas"], [0.9, 0.99])
    with pytest.raises(TrainConfigError, match="unknown setting"):
        load_train_config(None, ["optim.momentum=0.9"])
    with pytest.raises(TrainConfigError, match="must be an integer"):
        load_train_config(None, ["steps=many"])
    with pytest.raises(TrainConfigError, match="invalid model settings"):
        load_train_config(None, ["arp.num_layers=2"])
    with pytest.raises(TrainConfigError, match="key.path=value"):
        load_train_config(None, ["steps"])
    with pytest.raises(TrainConfigError, match="does not exist"):
        load_train_config(tmp_path / "missing.yaml")


def test_shipped_configs_parse_and_build() -> None:
    small = load_train_config(REPO / "config" / "train_cpu_small.yaml", ["data.root=/data"])
    assert (small.viclip["preset"], small.arp["preset"], small.align_weight, small.au_update_prob) == (
        "cpu_tiny", "cpu_tiny", 0.5, 0.5)  # fmt: skip
    assert (small.au_negatives, small.precision, small.threads) == ("vocabulary", "bf16", 1)
    paper = load_train_config(REPO / "config" / "train_paper.yaml", ["data.root=/data"])
    assert paper.au_update_prob == 0.2 and paper.au_negatives == "batch"  # the paper's recipe
    assert paper.batch_size * 2 == 192 and paper.steps == 80000 and paper.optim.arp_lr_per_sample == 1.25e-5
    assert paper.optim.video_lr == 1e-5 and paper.optim.text_lr_ratio == 0.05 and paper.optim.align_lr == 1e-4
    joint = paper.model_config(["push the maroon button"])
    assert joint.arp.name == "paper" and joint.viclip.name.startswith("ViCLIP")
    with torch.device("meta"):  # the paper-size model builds (without allocating ~1 GB)
        model = MirrorModel(joint)
    assert sum(p.numel() for p in model.arp.parameters()) > 60e6


# ------------------------------------------------------------------------------------------------ data
def _entry(length: int, keyframes: tuple[int, ...]) -> EpisodeEntry:
    poses = np.zeros((length, 7))
    poses[:, 3:7] = [0.0, 0.0, 0.0, -1.0]  # qw < 0: the target must be flipped to qw > 0
    poses[:, 0] = np.arange(length)
    ignore = np.zeros(length)
    ignore[29] = 1.0
    return EpisodeEntry(0, EpisodeRecord("t", 0, ("do it",), Path("/x"), length, 3), "do it", keyframes,
                        poses, np.ones(length), ignore)  # fmt: skip


def test_sample_formation_follows_peract_and_keyframes_only_mode() -> None:
    entry = _entry(61, (30, 45, 60))
    keyframes_only = [(t.obs_frame, t.target_frame, t.step) for t in form_transitions(entry, "keyframes")]
    assert keyframes_only == [(0, 30, 0), (30, 45, 1), (45, 60, 2)]
    peract = [(t.obs_frame, t.target_frame, t.step) for t in form_transitions(entry, "peract", every_n=10)]
    assert peract[:3] == keyframes_only  # the chain from frame 0
    assert (10, 30, 0) in peract and (30, 45, 1) in peract and (40, 45, 0) in peract and (50, 60, 0) in peract
    assert sum(1 for p in peract if p[:2] == (45, 60)) == 5  # repeated once per start frame before 45
    assert len(peract) == 3 + 3 + 3 + 2 + 2 + 1  # start 60 has no later keyframe
    action = target_action(entry, 30)
    np.testing.assert_allclose(action, [30, 0, 0, 0, 0, 0, 1, 1, 1])  # ignore_collisions from frame 29


def test_dataset_scan_split_and_paired_batches(data_root: Path, tmp_path: Path) -> None:
    entries = scan_episodes(data_root)
    assert [e.episode for e in entries] == [0, 1, 2] and all(e.keyframes for e in entries)
    train, held_out = split_episodes(entries, 0.25)
    assert [e.episode for e in train] == [0, 1] and [e.episode for e in held_out] == [2]
    assert split_episodes(entries, 0.0)[1] == []
    trainer = MirrorTrainer(small_config(data_root, tmp_path / "run", "alignment.pairing=instruction"), CPU)
    batch = trainer.builder.build(3)
    again = trainer.builder.build(3)
    assert batch.au_ids == again.au_ids and batch.ee_ids == again.ee_ids
    assert torch.equal(batch.ee["points"], again.ee["points"]) and torch.equal(batch.clips, again.clips)
    assert batch.au_instructions == batch.ee_instructions  # each clip paired with a same-instruction sample
    assert all(task == "push_buttons" and episode in (0, 1) for task, episode in batch.au_ids)
    assert batch.clips.shape == (3, 8, 128, 128, 3) and batch.clips.dtype == torch.uint8
    other_rank = trainer.builder.build(3, rank=1)
    assert not torch.equal(other_rank.ee["points"], batch.ee["points"])
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert [row["episode"] for row in split["held_out"]] == [2]


def test_clear_errors_for_bad_data(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingDataError, match="does not exist"):
        scan_episodes(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="no episodes"):
        scan_episodes(tmp_path / "empty")
    with pytest.raises(TrainingDataError, match="not in"):
        scan_episodes(data_root, ["open_drawer"])
    with pytest.raises(PolicyInputError, match=r"\(64, 64, 3\)"):
        MirrorTrainer(small_config(data_root, tmp_path / "a", "arp.camera_resolution=64"), CPU)
    with pytest.raises(TrainingDataError, match="overhead"):
        MirrorTrainer(small_config(data_root, tmp_path / "b", "arp.cameras=[front, overhead]"), CPU)
    assert main(train_cli(tmp_path / "missing", tmp_path / "c", "--steps", "1")) == 2
    assert not (tmp_path / "c" / "checkpoints").exists()


# ------------------------------------------------------------------------------------------ optimisation
def test_lamb_moves_each_tensor_by_lr_relative_to_its_norm_and_schedule_shape() -> None:
    weight = torch.nn.Parameter(torch.full((4, 4), 2.0))
    weight.grad = torch.randn(4, 4)
    Lamb([weight], lr=0.01, weight_decay=0.0).step()
    assert math.isclose(float((weight.detach() - 2.0).norm() / 8.0), 0.01, rel_tol=1e-4)  # ||w|| = 8
    assert lr_factor(0, 100, 10, 0.01) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, 0.01) == pytest.approx(1.0)
    assert lr_factor(99, 100, 10, 0.01) == pytest.approx(0.01, abs=1e-3)
    assert lr_factor(55, 100, 10, 0.01) == pytest.approx(0.505, abs=1e-3)


def test_lamb_holds_a_zero_initialised_tensor_at_zero_unless_it_is_exempt() -> None:
    """The trap the ``weights`` layer adaptation fixes: after a warm-up-sized first step, the trust ratio
    ||w|| / ||update|| lets a tensor that started at zero grow only by a factor (1 + lr) per step."""
    torch.manual_seed(0)
    grads = [torch.randn(8, 8) + 0.5 for _ in range(200)]  # a consistent direction, as a useful gradient has
    sizes = {}
    for adapt in (True, False):
        weight = torch.nn.Parameter(torch.zeros(8, 8))
        optimizer = Lamb([{"params": [weight], "adapt": adapt}], lr=1e-3)
        for step, grad in enumerate(grads):
            optimizer.param_groups[0]["lr"] = 1e-3 * min(1.0, (step + 1) / 100)  # linear warm-up
            weight.grad = grad
            optimizer.step()
        sizes[adapt] = float(weight.detach().abs().mean())
    assert sizes[True] < 1e-4 < 0.05 < sizes[False]


def test_layer_adaptation_weights_exempts_what_starts_at_zero(data_root: Path, tmp_path: Path) -> None:
    trainer = MirrorTrainer(
        small_config(data_root, tmp_path / "run", "optim.arp_layer_adaptation=weights"), CPU
    )
    adapted, exempt = trainer.optimizers.arp.param_groups
    assert adapted["adapt"] and not exempt["adapt"] and exempt["weight_decay"] == 0.0
    arp = trainer.model.arp
    names = {id(p): n for n, p in arp.named_parameters()}
    exempt_names = {names[id(p)] for p in exempt["params"]}
    assert "cct.cross_blocks.0.modulation.1.weight" in exempt_names  # zero-initialised AdaLN
    assert "mvt_coarse.fc_in.bias" in exempt_names and "mvt_coarse.fc_in.weight" not in exempt_names
    assert len(adapted["params"]) + len(exempt["params"]) == len(names)
    (only,) = MirrorTrainer(small_config(data_root, tmp_path / "all"), CPU).optimizers.arp.param_groups
    assert only["adapt"] and len(only["params"]) == len(names)  # ``all``: as the shipped model trained
    with pytest.raises(TrainConfigError, match="arp_layer_adaptation"):
        small_config(data_root, tmp_path / "bad", "optim.arp_layer_adaptation=some")


def test_viclip_learns_on_au_steps_only_and_arp_on_every_step(data_root: Path, tmp_path: Path) -> None:
    trainer = MirrorTrainer(small_config(data_root, tmp_path / "run", "au_update_prob=0.5", "seed=3"), CPU)
    groups = trainer.optimizers.viclip.param_groups
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    viclip = trainer.model.viclip
    assert id(viclip.temp) in no_decay and id(viclip.text_encoder.token_embedding.weight) in no_decay
    assert id(viclip.vision_encoder.proj) not in no_decay
    assert {g["name"]: g["base_lr"] for g in groups} == {
        "lr/viclip_video": 1e-3,
        "lr/viclip_text": 1e-3 * 0.05,
    }
    schedule = [is_au_step(3, s, 0.5) for s in range(4)]
    assert any(schedule) and not all(schedule)
    for step, au in enumerate(schedule):
        viclip, arp, heads = (
            params(trainer.model.viclip),
            params(trainer.model.arp),
            params(trainer.model.alignment),
        )
        metrics = trainer.train_step(step, trainer.builder.build(step))
        assert metrics["au_step"] == float(au) and ("loss/au" in metrics) == au
        assert all(math.isfinite(v) for v in metrics.values())
        assert changed(viclip, trainer.model.viclip) == au
        assert changed(arp, trainer.model.arp) and changed(heads, trainer.model.alignment)


def test_the_video_feature_thread_lives_only_while_a_run_trains(data_root: Path, tmp_path: Path) -> None:
    """A process that trains several runs (mirror_study) keeps no idle thread per finished run."""

    def video_threads() -> int:
        return sum(t.name.startswith("video-features") for t in threading.enumerate())

    before = video_threads()
    trainer = MirrorTrainer(small_config(data_root, tmp_path / "run", "steps=2", "au_update_prob=0.0"), CPU)
    thread = trainer.video_thread
    batch = trainer.builder.build(0)
    u = thread.submit(
        trainer.model.viclip, batch.clips, "fp32", CPU, torch.Generator().manual_seed(0)
    ).result()
    assert thread.running and video_threads() == before + 1 and u.shape[0] == batch.clips.shape[0]
    thread.close()
    assert not thread.running and video_threads() == before
    trainer.run()  # non-AU steps compute u on the thread, which ends with the run
    assert not thread.running and video_threads() == before


def test_vocabulary_negatives_score_each_clip_against_every_instruction(
    data_root: Path, tmp_path: Path
) -> None:
    """au_negatives=vocabulary: L_AU is each clip's cross-entropy over the whole instruction vocabulary."""
    config = small_config(data_root, tmp_path / "run", "au_update_prob=1.0", "au_negatives=vocabulary")
    trainer = MirrorTrainer(config, CPU)
    batch = trainer.builder.build(0)
    model = trainer.model
    vocabulary = list(model.config.instructions)
    assert len(vocabulary) == 2  # the tiny dataset's two push_buttons instructions
    torch.manual_seed(0)
    model.train()
    ids, match_ids, targets = trainer._au_texts(batch.au_instructions)
    assert match_ids is None and ids.shape[0] == len(vocabulary)
    assert targets.tolist() == [vocabulary.index(s) for s in batch.au_instructions]
    model.eval()  # no masking: the hand computation below sees the same video features
    out = model.viclip(batch.clips, ids, text_targets=targets)
    video = model.viclip.encode_video(batch.clips)
    text = model.viclip.encode_text(ids)
    expected = F.cross_entropy(model.viclip.logit_scale * video @ text.t(), targets)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    metrics = trainer.train_step(0, batch)
    assert math.isfinite(metrics["loss/au"])
    with pytest.raises(TrainConfigError, match="au_negatives"):
        small_config(data_root, tmp_path / "bad", "au_negatives=memory_bank").validate()


def test_align_weight_zero_is_the_same_run_without_alignment_gradients(
    data_root: Path, tmp_path: Path
) -> None:
    extra = ("au_update_prob=0",)
    mirror = MirrorTrainer(small_config(data_root, tmp_path / "mirror", *extra), CPU)
    baseline = MirrorTrainer(small_config(data_root, tmp_path / "base", *extra, "align_weight=0"), CPU)
    assert baseline.optimizers.alignment is None
    initial_arp = {k: v.clone() for k, v in baseline.model.arp.state_dict().items()}
    heads = params(baseline.model.alignment)
    batch_m, batch_b = mirror.builder.build(0), baseline.builder.build(0)
    assert batch_m.ee_ids == batch_b.ee_ids and torch.equal(batch_m.ee["points"], batch_b.ee["points"])
    metrics_m, metrics_b = mirror.train_step(0, batch_m), baseline.train_step(0, batch_b)
    assert metrics_m["loss/ee"] == metrics_b["loss/ee"]  # same init, data and random draws
    assert metrics_m["loss/align"] == metrics_b["loss/align"]  # computed (for logging) in both
    assert not changed(heads, baseline.model.alignment)
    assert all(p.grad is None for p in baseline.model.alignment.parameters())
    assert changed(heads, mirror.model.alignment)
    # the baseline's ARP gradient is exactly that of L_EE alone
    grads = {k: p.grad.clone() for k, p in baseline.model.arp.named_parameters()}
    reference = MirrorModel(baseline.model.config)
    reference.arp.load_state_dict(initial_arp)
    reference.viclip.load_state_dict(baseline.model.viclip.state_dict())
    reference.train()
    torch.manual_seed(step_seed(baseline.config.seed, STREAM_MODEL, 0))
    ee = dict(batch_b.ee)
    ee["lang"], ee["lang_mask"] = reference.language_features(batch_b.ee_instructions)
    loss, _ = reference.arp(ee)
    loss.backward()
    for name, param in reference.arp.named_parameters():
        torch.testing.assert_close(param.grad, grads[name], rtol=1e-5, atol=1e-7, msg=name)
    # with the mirror term, ARP receives a different gradient
    assert any(not torch.equal(p.grad, grads[n]) for n, p in mirror.model.arp.named_parameters())


def test_probe_trains_only_the_alignment_heads(data_root: Path, tmp_path: Path) -> None:
    first = MirrorTrainer(small_config(data_root, tmp_path / "src"), CPU)
    first.model.save_pretrained(tmp_path / "init")
    trainer = MirrorTrainer(
        small_config(data_root, tmp_path / "probe", "probe=true", f"init={tmp_path / 'init'}"), CPU
    )
    assert set(trainer.optimizers.named()) == {"alignment"}
    assert not any(p.requires_grad for p in trainer.model.viclip.parameters())
    assert not any(p.requires_grad for p in trainer.model.arp.parameters())
    viclip, arp, heads = (
        params(trainer.model.viclip),
        params(trainer.model.arp),
        params(trainer.model.alignment),
    )
    assert not torch.equal(heads["t_u.weight"], first.model.alignment.t_u.weight)  # fresh heads
    for step in range(2):
        trainer.train_step(step, trainer.builder.build(step))
    assert not changed(viclip, trainer.model.viclip) and not changed(arp, trainer.model.arp)
    assert changed(heads, trainer.model.alignment)
    source = dict(first.model.arp.named_parameters())
    assert all(
        torch.equal(p, source[n]) for n, p in trainer.model.arp.named_parameters()
    )  # loaded from --init


def test_init_parts_warm_start_only_the_named_weights(data_root: Path, tmp_path: Path) -> None:
    first = MirrorTrainer(small_config(data_root, tmp_path / "src"), CPU)
    first.model.save_pretrained(tmp_path / "init")
    parts = "init_parts=[arp, viclip.text_encoder]"
    trainer = MirrorTrainer(
        small_config(data_root, tmp_path / "warm", f"init={tmp_path / 'init'}", parts, "seed=1"), CPU
    )
    source = first.model.state_dict()
    ours = trainer.model.state_dict()
    taken = [n for n in ours if n.startswith(("arp.", "viclip.text_encoder."))]
    assert taken and all(torch.equal(ours[n], source[n]) for n in taken)
    fresh = [
        n for n in ours if n not in taken and source[n].numel() > 1 and float(source[n].float().std()) > 0
    ]  # random-init weights
    assert fresh and not any(torch.equal(ours[n], source[n]) for n in fresh)
    with pytest.raises(CheckpointError, match="name no weights"):
        MirrorTrainer(
            small_config(
                data_root, tmp_path / "bad", f"init={tmp_path / 'init'}", "init_parts=[arp.nothing]"
            ),
            CPU,
        )
    # a fine-tune may change ARP's augmentation (training-only), never its architecture
    tuned = MirrorTrainer(
        small_config(data_root, tmp_path / "tuned", f"init={tmp_path / 'init'}", "arp.aug_yaw_deg=0"), CPU
    )
    assert torch.equal(tuned.model.state_dict()[taken[0]], source[taken[0]])
    assert tuned.model.config.arp.aug_yaw_deg == 0
    with pytest.raises(CheckpointError, match="arp config differs"):
        MirrorTrainer(
            small_config(data_root, tmp_path / "bad", f"init={tmp_path / 'init'}", "arp.self_layers=3"), CPU
        )
    with pytest.raises(TrainConfigError, match="init_parts"):
        small_config(data_root, tmp_path / "bad", "init_parts=[policy]")
    # a switch whose modules start as the identity (FiLM) may be turned on in a fine-tune, not off
    film = MirrorTrainer(
        small_config(data_root, tmp_path / "film", f"init={tmp_path / 'init'}", "arp.language_film=true"), CPU
    )
    assert torch.equal(film.model.state_dict()[taken[0]], source[taken[0]])
    assert not film.model.arp.mvt_coarse.film.proj.weight.any()
    film.model.save_pretrained(tmp_path / "film_init")
    with pytest.raises(CheckpointError, match="arp config differs"):
        MirrorTrainer(small_config(data_root, tmp_path / "bad", f"init={tmp_path / 'film_init'}"), CPU)


def test_policy_text_own_gives_arp_its_own_tower_trained_by_the_ee_loss(
    data_root: Path, tmp_path: Path
) -> None:
    shared = MirrorTrainer(small_config(data_root, tmp_path / "shared"), CPU)
    assert shared.model.policy_text_encoder is None
    assert not any(k.startswith("arp.text_encoder.") for k in shared.model.state_dict())
    trainer = MirrorTrainer(
        small_config(data_root, tmp_path / "own", "policy_text=own", "au_update_prob=0.0"), CPU
    )
    own = trainer.model.policy_text_encoder
    assert own is not None and own is not trainer.model.viclip.text_encoder
    before_own, before_viclip = params(own), params(trainer.model.viclip.text_encoder)
    for step in range(2):
        trainer.train_step(step, trainer.builder.build(step))
    assert changed(before_own, own)  # L_EE trains the policy's own tower
    assert not changed(before_viclip, trainer.model.viclip.text_encoder)  # no AU step: ViCLIP's is untouched
    trainer.model.save_pretrained(tmp_path / "saved")
    loaded = MirrorModel.from_pretrained(tmp_path / "saved")
    assert loaded.config.policy_text == "own"
    torch.testing.assert_close(
        loaded.language_features(["push the red button"])[0],
        trainer.model.language_features(["push the red button"])[0].detach(),
    )
    with pytest.raises(TrainConfigError, match="policy_text"):
        small_config(data_root, tmp_path / "bad", "policy_text=borrowed")


def test_video_camera_sets_the_checkpoints_camera_and_the_clips(data_root: Path, tmp_path: Path) -> None:
    trainer = MirrorTrainer(small_config(data_root, tmp_path / "wrist", "data.video_camera=wrist"), CPU)
    assert trainer.model.config.camera_for_video == "wrist"
    entry = trainer.builder.entries[0]
    wrist = trainer.store.clip(entry, [0])[0]
    episode = load_episode(entry.record, cameras=["wrist"], frames=[0])
    np.testing.assert_array_equal(wrist, episode.observations[0].camera("wrist").rgb)
    with pytest.raises(TrainConfigError, match="video_camera"):
        small_config(data_root, tmp_path / "bad", "data.video_camera=overhead")


# ------------------------------------------------------------------------------------ runs and resuming
def test_end_to_end_run_writes_logs_and_a_loadable_checkpoint(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(train_cli(data_root, out, "--steps", "3", "--set", "au_update_prob=1.0")) == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in lines if "loss/total" in m]
    assert [m["step"] for m in train] == [0, 1, 2]
    assert all(math.isfinite(m["loss/total"]) and m["loss/au"] > 0 for m in train)
    final_eval = [m for m in lines if "held_out/recognition_top1" in m]
    assert len(final_eval) == 1 and 0.0 <= final_eval[0]["held_out/alignment_recall_at_1"] <= 1.0
    assert (
        list((out / "tb").iterdir())
        and (out / "checkpoints" / "latest").read_text().strip() == "step_00000003"
    )
    agent = MirrorAgent.from_pretrained(out / "final")
    record = RLBenchDataset(data_root).records[2]
    observation = load_episode(record, frames=[0]).observations[0]
    action, e = agent.act(observation, record.descriptions[0], step=0)
    assert np.isfinite(action.to_vector()).all() and e.shape == (agent.model.config.arp.embed_dim,)
    assert agent.model.config.instructions == sorted({r.descriptions[0] for r in RLBenchDataset(data_root)})
    # a second fresh run into the same directory is refused
    assert main(train_cli(data_root, out, "--steps", "3")) == 2


def test_resume_continues_exactly_and_refuses_other_settings(data_root: Path, tmp_path: Path) -> None:
    common = ("--steps", "4", "--set", "au_update_prob=0.5", "--seed", "3")
    assert main(train_cli(data_root, tmp_path / "straight", *common)) == 0
    assert main(train_cli(data_root, tmp_path / "split", *common, "--set", "stop_after=2")) == 0
    assert (tmp_path / "split" / "checkpoints" / "latest").read_text().strip() == "step_00000002"
    assert not (tmp_path / "split" / "final").exists()

    snapshot = {p: p.read_bytes() for p in (tmp_path / "split").rglob("*") if p.is_file()}
    config = small_config(data_root, tmp_path / "split", "au_update_prob=0.5", "seed=3", "steps=4",
                          "alignment.tau=0.2")  # fmt: skip
    with pytest.raises(CheckpointError, match=r"alignment\.tau"):
        MirrorTrainer(config, CPU, resume=tmp_path / "split")
    assert {p: p.read_bytes() for p in (tmp_path / "split").rglob("*") if p.is_file()} == snapshot

    with open(tmp_path / "split" / "metrics.jsonl", "a") as handle:  # as if step 2 ran, then the job died
        handle.write(json.dumps({"step": 2, "loss/ee": 1.0}) + "\n")
    assert main(["--resume", str(tmp_path / "split"), "--log-level", "WARNING"]) == 0
    straight = MirrorModel.from_pretrained(tmp_path / "straight" / "final").state_dict()
    resumed = MirrorModel.from_pretrained(tmp_path / "split" / "final").state_dict()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    lines = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if "loss/ee" in m] == [0, 1, 2, 3]  # the stale step-2 line is gone


# ----------------------------------------------------------------------------------------- distributed
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _join_two_process_group(rank: int, port: int) -> DistInfo:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)})  # fmt: skip
    torch.set_num_threads(1)
    from mirror.training.distributed import setup_distributed

    return setup_distributed("cpu")


def _alignment_batch(rows: int = 8) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The global batch of the negatives test: ``rows`` pairs, two of which share a key."""
    generator = torch.Generator().manual_seed(11)
    keys = [f"instruction {i}" for i in range(rows - 1)] + ["instruction 0"]
    return torch.randn(rows, 16, generator=generator), torch.randn(rows, 12, generator=generator), keys


def _gather_worker(rank: int, port: int, result_dir: str) -> None:
    from mirror.alignment import AlignmentConfig, MirrorAlignment
    from mirror.training.distributed import gather_batch, teardown

    dist = _join_two_process_group(rank, port)
    try:
        u_all, e_all, keys_all = _alignment_batch()
        half = u_all.shape[0] // 2
        u = u_all[rank * half : (rank + 1) * half].clone().requires_grad_(True)
        e = e_all[rank * half : (rank + 1) * half].clone().requires_grad_(True)
        torch.manual_seed(0)
        heads = MirrorAlignment(16, 12, AlignmentConfig(shared_dim=8, tau=0.1))
        gu, ge, keys = gather_batch(dist, u, e, keys_all[rank * half : (rank + 1) * half])
        loss = heads(gu, ge, keys).loss
        loss.backward()
        torch.save({"loss": loss.detach(), "keys": keys, "u_grad": u.grad, "e_grad": e.grad},
                   Path(result_dir) / f"gather{rank}.pt")  # fmt: skip
    finally:
        teardown(dist)


@pytest.mark.slow
def test_gathered_negatives_give_the_single_process_loss_of_the_concatenated_batch(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    from mirror.alignment import AlignmentConfig, MirrorAlignment

    mp.spawn(_gather_worker, args=(_free_port(), str(tmp_path)), nprocs=2)
    u_all, e_all, keys_all = _alignment_batch()
    u_all.requires_grad_(True)
    e_all.requires_grad_(True)
    torch.manual_seed(0)
    reference = MirrorAlignment(16, 12, AlignmentConfig(shared_dim=8, tau=0.1))(u_all, e_all, keys_all).loss
    reference.backward()
    half = u_all.shape[0] // 2
    for rank in (0, 1):
        got = torch.load(tmp_path / f"gather{rank}.pt", weights_only=False)
        assert got["keys"] == keys_all  # every rank sees the global batch, in rank order
        assert torch.allclose(got["loss"], reference.detach(), atol=1e-6)
        rows = slice(rank * half, (rank + 1) * half)  # each rank's rows get the sum over ranks of the same
        assert torch.allclose(got["u_grad"], 2 * u_all.grad[rows], atol=1e-6)  # loss: DDP's mean undoes x2
        assert torch.allclose(got["e_grad"], 2 * e_all.grad[rows], atol=1e-6)
    torch.manual_seed(0)
    local = MirrorAlignment(16, 12, AlignmentConfig(shared_dim=8, tau=0.1))(u_all[:half], e_all[:half]).loss
    assert not torch.allclose(local, reference)  # the local batch alone is a different loss


def _ddp_worker(rank: int, port: int, data_root: str, out: str, result_dir: str) -> None:
    from mirror.training.distributed import teardown

    dist = _join_two_process_group(rank, port)
    try:
        trainer = MirrorTrainer(
            small_config(Path(data_root), Path(out), "steps=5", "au_update_prob=0.5", "seed=3"), dist
        )
        trainer.run()
        torch.save(trainer.model.state_dict(), Path(result_dir) / f"rank{rank}.pt")
    finally:
        teardown(dist)


@pytest.mark.slow
def test_two_process_gloo_run_keeps_ranks_identical(data_root: Path, tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(_free_port(), str(data_root), str(tmp_path / "run"), str(tmp_path)), nprocs=2)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    final = MirrorModel.from_pretrained(tmp_path / "run" / "final").state_dict()
    assert all(torch.equal(final[k], rank0[k]) for k in final)
    assert [is_au_step(3, s, 0.5) for s in range(5)] == [True, True, True, False, True]  # both kinds of step
    checkpoint = tmp_path / "run" / "checkpoints" / "step_00000005"
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=True)
    assert state["world_size"] == 2
