"""The `evaluate` command end to end: a tiny untrained mirror model, real demos recorded with the embedded
simulator, real rollouts. Cameras render at 64x64 (the tiny ARP is built for it) to keep the file fast."""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mirror.agent import MirrorAgent
from mirror.alignment import PAIRINGS, alignment_recall_at_1
from mirror.evaluation import (
    CheckpointNotFoundError,
    EmptyHeldOutError,
    EvaluationError,
    EvaluationSettings,
    SeedCollisionError,
    rollout_pool,
    run_episode,
    run_evaluation,
)
from mirror.evaluation.evaluate import main
from mirror.evaluation.execution_metrics import summarize_by_instruction, summarize_execution
from mirror.evaluation.rollout import FAILURE_REASONS, EpisodeOutcome, plan_rollouts
from mirror.evaluation.rollout_pool import RolloutJob, run_planned_rollouts
from mirror.evaluation.runner import rollout_variations
from mirror.evaluation.seeds import (
    EVAL_SEED_BASE,
    check_disjoint,
    environment_seed,
    variation_schedule,
)
from mirror.model import WEIGHTS_NAME, MirrorModel
from mirror.training.data import scan_episodes, split_summary
from mirror_common.errors import CheckpointError
from mirror_perception.clip_sampling import sample_clip_indices
from mirror_perception.recognition import InstructionRecognizer
from sim_bridge.actions import KeyframeAction
from sim_bridge.dataset import RLBenchDataset, load_episode
from sim_bridge.errors import DatasetError
from sim_bridge.scripts.generate_demos import plan_episodes, record_episode, save_episode
from sim_bridge.tasks import TASKS, make_task

IMAGE_SIZE = 64
DEMOS = (("push_buttons", 0, 11), ("open_drawer", 0, 12))  # (task, variation, seed): the shortest demos
UNREACHABLE = np.array([0.7, 0.5, 1.7])  # inside the workspace box, ~1.5 m from the arm's base


def vocabulary() -> list[str]:
    names = [make_task("push_buttons").descriptions(v)[0] for v in range(6)]
    names += [make_task("open_drawer").descriptions(v)[0] for v in range(3)]
    return list(dict.fromkeys(names))


def tiny_model(seed: int) -> MirrorModel:
    torch.manual_seed(seed)
    return MirrorModel.from_names(instructions=vocabulary(), arp_overrides={"camera_resolution": IMAGE_SIZE})


@pytest.fixture(scope="module")
def sim():
    from sim_bridge.bullet.env import BulletBackend, BulletConfig

    env = BulletBackend(BulletConfig(image_size=IMAGE_SIZE))
    yield env
    env.close()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, sim):
    root = tmp_path_factory.mktemp("demos")
    for task, variation, seed in DEMOS:
        episode = record_episode(sim, task, variation, seed)
        save_episode(root / task / "all_variations" / "episodes" / "episode0", episode)
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, dataset):
    """A train_joint-style run: final/ model and split.json (written by the trainer's own function)."""
    run = tmp_path_factory.mktemp("runs") / "mirror"
    tiny_model(0).save_pretrained(run / "final")
    entries = scan_episodes(dataset)
    (run / "split.json").write_text(json.dumps(split_summary([], entries)))
    return run


@pytest.fixture(scope="module")
def evaluated(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    argv = ["--checkpoints", str(run_dir), "--out", str(out), "--episodes", "1", "--max-steps", "2"]
    assert main([*argv, "--eval-seeds", "0", "1", "--blind-control", "--no-progress"]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_outputs_exist_with_structure_and_numbers_in_range(evaluated):
    out, results = evaluated
    for name in ("results.json", "eval_results.csv", "summary.csv", "aligned_embeddings_mirror.npz",
                 "confusion_mirror.csv"):  # fmt: skip
        assert (out / name).is_file(), name
    for name in ("success.png", "recognition.png", "tsne.png", "confusion_mirror.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    model = results["models"]["mirror"]
    assert model["held_out"]["episodes"] == 2 and model["held_out"]["source"].startswith("held_out of")
    recognition = model["recognition"]
    assert recognition["vocabulary_size"] == len(vocabulary())
    assert recognition["chance_top1"] == pytest.approx(1 / len(vocabulary()))
    assert set(recognition["per_task"]) == {"push_buttons", "open_drawer"}
    assert 0.0 <= recognition["overall"]["top1"] <= recognition["overall"]["top5"] <= 1.0
    assert sum(map(sum, recognition["confusion"]["counts"])) == 2
    assert set(recognition["per_instruction"]) == {r["instruction"] for r in recognition["records"]}
    alignment = model["alignment"]
    assert alignment["pairing"] == "instruction" and alignment["clips"] == 2
    assert alignment["projection"].startswith(("t-SNE", "PCA"))
    for pairing in PAIRINGS:
        assert 0.0 <= alignment[pairing]["mean"] <= 1.0 and 0.0 < alignment[pairing]["chance"] <= 1.0

    execution = model["execution"]
    assert set(execution["per_task"]) == {"push_buttons", "open_drawer"}
    generation_seeds = {seed for _, _, seed in DEMOS}
    for task, summary in execution["per_task"].items():
        assert summary["episodes"] == 2 and set(summary["success_per_seed"]) == {"0", "1"}
        assert 0.0 <= summary["success_mean"] <= 1.0 and summary["success_std"] >= 0.0
        assert summary["successes"] + sum(summary["failures"].values()) == summary["episodes"], task
    for episode in execution["episodes"]:
        assert episode["env_seed"] >= EVAL_SEED_BASE and episode["env_seed"] not in generation_seeds
        assert 1 <= episode["steps"] <= 2
        assert (episode["failure"] is None) == episode["success"]
        assert episode["failure"] in (None, *FAILURE_REASONS)
        parts = sum(episode[k] for k in ("reset_seconds", "inference_seconds", "planning_seconds"))
        assert 0.0 < parts <= episode["total_seconds"] + 1e-6

    with (out / "eval_results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["task"] for r in rows] == ["open_drawer", "push_buttons", "average"]
    for row in rows:
        assert 0.0 <= float(row["success_mean_pct"]) <= 100.0
        assert 0.0 <= float(row["blind_success_mean_pct"]) <= 100.0
        assert 0.0 <= float(row["recognition_top1_pct"]) <= 100.0
        assert float(row["total_s_per_episode"]) > 0.0
    average = rows[-1]
    assert float(average["recognition_top1_pct"]) == pytest.approx(
        100 * recognition["overall"]["top1"], abs=0.01
    )


def test_blind_control_and_per_variation_success(evaluated):
    """The control replays the same scenes with an empty instruction; variations are reported one by one."""
    out, results = evaluated
    model = results["models"]["mirror"]
    given, blind = model["execution"]["episodes"], model["execution_blind"]["episodes"]
    scene = ("task", "variation", "eval_seed", "episode", "env_seed")
    assert [[e[k] for k in scene] for e in given] == [[e[k] for k in scene] for e in blind]
    assert not any(e["blind"] for e in given) and all(e["blind"] for e in blind)
    with (out / "summary.csv").open() as handle:
        summary = next(csv.DictReader(handle))
    assert float(summary["blind_success_mean_pct"]) == pytest.approx(
        100 * model["execution_blind"]["overall"]["success_mean"], abs=0.01
    )
    with (out / "variation_results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    for task, summary in model["execution"]["per_task"].items():
        mine = [r for r in rows if r["task"] == task]
        assert sum(int(r["rollout_episodes"]) for r in mine) == summary["episodes"]
        for row in mine:
            episodes = [e for e in given if e["task"] == task and e["variation"] == int(row["variation"])]
            assert row["instruction"] == episodes[0]["instruction"]
            assert row["trained_instruction"] == "yes"  # by default only the trained instructions roll out
            assert float(row["success_pct"]) == pytest.approx(100 * np.mean([e["success"] for e in episodes]))
            assert 0.0 <= float(row["blind_success_pct"]) <= 100.0


class RecordingPolicy:
    """The real agent, recording the instruction it is given."""

    def __init__(self, agent: MirrorAgent) -> None:
        self.agent, self.instructions = agent, []

    def act(self, observation, instruction, step):
        self.instructions.append(instruction)
        return self.agent.act(observation, instruction, step)


def test_blind_rollout_gives_the_policy_no_instruction(run_dir, sim):
    policy = RecordingPolicy(MirrorAgent.from_pretrained(run_dir / "final"))
    outcome = run_episode(sim, policy, "push_buttons", 0, environment_seed(0, 3), max_steps=2, blind=True)
    assert outcome.blind and outcome.instruction and set(policy.instructions) == {None}
    run_episode(sim, policy, "push_buttons", 0, environment_seed(0, 3), max_steps=1)
    assert policy.instructions[-1] == outcome.instruction


def uniform_clip(record) -> np.ndarray:
    """The 8-frame uniform clip, from the whole video read independently of the evaluation code."""
    video = load_episode(record, cameras=["front"]).observations
    return np.stack([video[i].camera("front").rgb for i in sample_clip_indices(len(video), 8)])


def test_recognition_matches_a_direct_computation(run_dir, dataset, evaluated):
    _, results = evaluated
    records = results["models"]["mirror"]["recognition"]["records"]
    model = MirrorModel.from_pretrained(run_dir / "final")
    recognizer = InstructionRecognizer(model.viclip, model.tokenizer, model.config.instructions)
    hits = []
    for record in RLBenchDataset(dataset).records:
        clip = uniform_clip(record)
        with torch.no_grad():
            scores = recognizer.similarities(clip)[0]
        predicted = model.config.instructions[int(scores.argmax())]
        mine = next(r for r in records if r["task"] == record.task)
        assert mine["predicted"] == predicted
        hits.append(predicted == record.descriptions[0])
    reported = results["models"]["mirror"]["recognition"]["overall"]["top1"]
    assert reported == pytest.approx(float(np.mean(hits)))


def test_recall_matches_alignment_recall_at_1_on_the_same_embeddings(run_dir, dataset, evaluated):
    out, results = evaluated
    saved = np.load(out / "aligned_embeddings_mirror.npz")
    keys = {
        "episode": list(zip(saved["tasks"].tolist(), saved["episodes"].tolist())),
        "instruction": saved["instructions"].tolist(),
        "class": saved["tasks"].tolist(),
    }
    alignment = results["models"]["mirror"]["alignment"]
    assert alignment["pairs"] == len(saved["z_u"])
    for pairing in PAIRINGS:
        expected = alignment_recall_at_1(
            torch.from_numpy(saved["z_u"]), torch.from_numpy(saved["z_e"]), keys[pairing]
        )
        assert alignment[pairing]["u_to_e"] == pytest.approx(expected.u_to_e)
        assert alignment[pairing]["e_to_u"] == pytest.approx(expected.e_to_u)

    # The saved embeddings are T_u u of the uniform clip and T_e e at the demo's first frame (step 0).
    agent = MirrorAgent.from_pretrained(run_dir / "final")
    record = RLBenchDataset(dataset).episodes(task=str(saved["tasks"][0]))[0]
    clip = uniform_clip(record)
    first = load_episode(record, frames=[0]).observations[0]
    _, e = agent.act(first, record.descriptions[0], 0)
    z_u, z_e = agent.aligned_embeddings(agent.video_embedding(clip), e)
    assert saved["steps"][0] == 0
    np.testing.assert_allclose(saved["z_u"][0], z_u, atol=1e-5)
    np.testing.assert_allclose(saved["z_e"][0], z_e, atol=1e-5)


def test_comparison_mode_puts_both_models_in_one_table(run_dir, dataset, tmp_path):
    baseline = tmp_path / "baseline_model"
    tiny_model(1).save_pretrained(baseline)
    out = tmp_path / "compare"
    argv = [
        "--checkpoints",
        str(run_dir),
        str(baseline),
        "--names",
        "mirror",
        "baseline",
        "--data",
        str(dataset),
    ]
    assert main([*argv, "--out", str(out), "--skip-rollouts", "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["models"]) == ["mirror", "baseline"]
    assert all("execution" not in m and m["held_out"]["episodes"] == 2 for m in results["models"].values())
    with (out / "summary.csv").open() as handle:
        summary = list(csv.DictReader(handle))
    assert [r["model"] for r in summary] == ["mirror", "baseline"]
    assert all(0.0 <= float(r["recall_at_1_mean_pct"]) <= 100.0 for r in summary)
    with (out / "eval_results.csv").open() as handle:
        assert {r["model"] for r in csv.DictReader(handle)} == {"mirror", "baseline"}
    assert (out / "tsne.png").is_file() and (out / "recognition.png").is_file()
    assert not (out / "success.png").exists()


def test_precision_and_coarse_prior_reach_every_agent_and_are_recorded(
    run_dir, dataset, tmp_path, one_torch_thread
):
    out = tmp_path / "bf16"
    argv = ["--checkpoints", str(run_dir), "--names", "m", "--data", str(dataset), "--out", str(out)]
    options = ["--precision", "bf16", "--coarse-prior", "0.5", "--skip-rollouts", "--no-progress"]
    assert main([*argv, *options]) == 0
    model = json.loads((out / "results.json").read_text())["models"]["m"]
    assert model["precision"] == "bf16" and len(model["recognition"]["records"]) == 2
    assert model["coarse_prior"] == 0.5
    job = RolloutJob(run_dir / "final", max_steps=1, precision="fp16", coarse_prior=2.0)
    rollout_pool._init_worker(job)
    worker_env, worker_agent, _ = rollout_pool._WORKER
    rollout_pool._WORKER = None
    worker_env.close()
    assert (worker_agent.precision, worker_agent.coarse_prior) == ("fp16", 2.0)
    with pytest.raises(ValueError, match="precision"):
        EvaluationSettings(precision="int8").validate()
    with pytest.raises(ValueError, match="coarse_prior"):
        EvaluationSettings(coarse_prior=-0.5).validate()
    with pytest.raises(ValueError, match="coarse_prior"):
        MirrorAgent.from_pretrained(run_dir / "final", coarse_prior=-1.0)


class FixedTargetPolicy:
    """The real agent, whose predicted position is replaced by a fixed target (its e is kept)."""

    def __init__(self, agent: MirrorAgent, position: np.ndarray) -> None:
        self.agent, self.position = agent, position

    def act(self, observation, instruction, step):
        action, e = self.agent.act(observation, instruction, step)
        return KeyframeAction(self.position.copy(), action.quaternion, action.gripper_open), e


def test_unreachable_target_is_a_planning_failure_with_its_reason(run_dir, sim):
    policy = FixedTargetPolicy(MirrorAgent.from_pretrained(run_dir / "final"), UNREACHABLE)
    outcome = run_episode(sim, policy, "push_buttons", 0, environment_seed(0, 0), max_steps=3)
    assert not outcome.success and outcome.failure == "planning_error" and outcome.steps == 1
    assert "IKError" in outcome.message and "step 0" in outcome.message
    assert (
        outcome.inference_seconds > 0.0 and outcome.planning_seconds > 0.0 and outcome.execution_seconds == 0
    )


def test_target_outside_the_workspace_is_an_invalid_action(run_dir, sim):
    policy = FixedTargetPolicy(MirrorAgent.from_pretrained(run_dir / "final"), np.array([1.5, 0.0, 1.0]))
    outcome = run_episode(sim, policy, "open_drawer", 0, environment_seed(0, 1), max_steps=2)
    assert outcome.failure == "invalid_action" and "outside the workspace" in outcome.message


class ScriptedPolicy:
    """Replays the task's own scripted waypoints as keyframe actions: must succeed through the same loop."""

    def __init__(self, env) -> None:
        self.env, self.waypoints = env, None

    def act(self, observation, instruction, step):
        if step == 0:
            self.waypoints = self.env.task.demo()
        return next(self.waypoints).action(), np.zeros(1)


def test_successful_rollout_is_counted_as_success(sim):
    outcome = run_episode(sim, ScriptedPolicy(sim), "push_buttons", 0, environment_seed(0, 2), max_steps=25)
    assert outcome.success and outcome.failure is None and 1 <= outcome.steps < 25
    assert outcome.execution_seconds > 0.0


def test_missing_and_corrupt_checkpoints_are_clear_errors(run_dir, tmp_path, caplog):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        run_evaluation([tmp_path / "nope"], ["x"], EvaluationSettings(rollouts=False), tmp_path / "out")
    with caplog.at_level(logging.ERROR):
        assert main(["--checkpoints", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in caplog.text
    corrupt = tmp_path / "corrupt"
    shutil.copytree(run_dir / "final", corrupt)
    (corrupt / WEIGHTS_NAME).write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError):
        run_evaluation([corrupt], ["x"], EvaluationSettings(rollouts=False), tmp_path / "out")
    assert main(["--checkpoints", str(corrupt), "--out", str(tmp_path / "o"), "--skip-rollouts"]) == 2
    assert not (tmp_path / "o" / "results.json").exists()


def test_empty_held_out_data_and_unknown_tasks_are_clear_errors(run_dir, tmp_path, caplog):
    empty = tmp_path / "empty"
    empty.mkdir()
    settings = EvaluationSettings(rollouts=False, data=empty)
    with pytest.raises(DatasetError, match="no episodes"):
        run_evaluation([run_dir], ["m"], settings, tmp_path / "out")
    no_held_out = tmp_path / "run"
    shutil.copytree(run_dir, no_held_out)
    (no_held_out / "split.json").write_text(json.dumps({"train": [], "held_out": []}))
    with pytest.raises(EmptyHeldOutError, match="no held-out episodes"):
        run_evaluation([no_held_out], ["m"], EvaluationSettings(rollouts=False), tmp_path / "out")
    bare = tmp_path / "bare"
    shutil.copytree(run_dir / "final", bare)  # a model without split.json needs --data
    with caplog.at_level(logging.ERROR):
        assert main(["--checkpoints", str(bare), "--out", str(tmp_path / "o"), "--skip-rollouts"]) == 2
        assert (
            main(["--checkpoints", str(run_dir), "--tasks", "no_such_task", "--out", str(tmp_path / "o")])
            == 2
        )
    assert "--data" in caplog.text and "no_such_task" in caplog.text
    with pytest.raises(SystemExit):
        main(["--checkpoints", str(run_dir), "--names", "a", "b"])


def test_evaluation_seeds_never_meet_generation_seeds():
    generation = [
        job.seed + 104_729 * attempt
        for seed in range(4)
        for job in plan_episodes(Path("unused"), sorted(TASKS), {t: [0] for t in TASKS}, 200, seed)
        for attempt in range(5)
    ]
    evaluation = [environment_seed(s, i) for s in range(3) for i in range(100)]
    check_disjoint(evaluation, generation)
    assert max(evaluation) < 2**32 and len(set(evaluation)) == len(evaluation)
    with pytest.raises(SeedCollisionError):
        check_disjoint(evaluation, [environment_seed(2, 7)])
    with pytest.raises(ValueError):
        environment_seed(-1, 0)


def test_variations_cycle_evenly_and_differ_between_seeds():
    schedule = variation_schedule("push_buttons", 50, 0, 120)
    counts = np.bincount(schedule, minlength=50)
    assert counts.min() == 2 and counts.max() == 3
    assert variation_schedule("push_buttons", 50, 0, 25) == schedule[:25]
    assert variation_schedule("push_buttons", 50, 1, 25) != schedule[:25]


def test_rollouts_use_the_trained_variations_unless_asked(evaluated):
    variations = rollout_variations(["push_buttons", "open_drawer"], vocabulary())
    # push_buttons' instructions name only the first buttons pushed, so variations 6 and 7 say what 0 and 1
    # say; 8 ends with a yellow button, an instruction the model never saw.
    assert variations["open_drawer"] == [0, 1, 2] and set(range(8)) <= set(variations["push_buttons"])
    assert 8 not in variations["push_buttons"]
    assert len(rollout_variations(["push_buttons"], vocabulary(), all_variations=True)["push_buttons"]) == 50
    with pytest.raises(EvaluationError, match="--all-variations"):
        rollout_variations(["turn_tap"], vocabulary())
    _, results = evaluated
    episodes = results["models"]["mirror"]["execution"]["episodes"]
    assert all(e["variation"] in variations[e["task"]] for e in episodes)


@pytest.mark.slow  # starts simulator processes
def test_parallel_rollouts_give_the_serial_outcomes(run_dir, sim):
    plans = plan_rollouts(
        ["push_buttons", "open_drawer"], {"push_buttons": [0, 1], "open_drawer": [0]}, [0], 2
    )
    job = RolloutJob(run_dir / "final", max_steps=2)
    agent = MirrorAgent(MirrorModel.from_pretrained(run_dir / "final"))
    serial = run_planned_rollouts(job, plans, 1, agent, sim)
    parallel = run_planned_rollouts(job, plans, 2)

    def essentials(results):
        return [(r.outcome.task, r.outcome.variation, r.outcome.env_seed, r.outcome.success, r.outcome.steps,
                 r.outcome.failure) for r in results]  # fmt: skip

    assert essentials(parallel) == essentials(serial)
    with pytest.raises(ValueError, match="processes"):
        run_planned_rollouts(job, plans, 0)


def test_success_mean_and_std_over_seeds():
    def outcome(task, seed, success):
        return EpisodeOutcome(
            task, 0, "x", seed, 0, environment_seed(seed, 0), success, 1, None if success else "max_steps"
        )

    outcomes = [outcome("a", 0, True), outcome("a", 0, False), outcome("a", 1, True), outcome("a", 1, True)]
    outcomes += [
        outcome("b", 0, False),
        outcome("b", 0, False),
        outcome("b", 1, True),
        outcome("b", 1, False),
    ]
    summary = summarize_execution(outcomes, [0, 1])
    assert summary["per_task"]["a"]["success_per_seed"] == {"0": 0.5, "1": 1.0}
    assert summary["per_task"]["a"]["success_mean"] == pytest.approx(0.75)
    assert summary["per_task"]["a"]["success_std"] == pytest.approx(np.std([0.5, 1.0], ddof=1))
    assert summary["overall"]["success_mean"] == pytest.approx((0.75 + 0.25) / 2)
    assert summary["overall"]["success_per_seed"] == {"0": 0.25, "1": 0.75}
    assert summary["per_task"]["b"]["failures"]["max_steps"] == 3


def test_generalisation_is_reported_apart_from_the_trained_instructions():
    """--all-variations: rollouts on instructions the model never saw are a separate figure."""

    def outcome(variation, instruction, success):
        return EpisodeOutcome("push_buttons", variation, instruction, 0, variation, variation, success, 1)

    outcomes = [outcome(0, "push red", True), outcome(1, "push blue", True), outcome(7, "push teal", False)]
    outcomes += [outcome(8, "push gold", True)]
    split = summarize_by_instruction(outcomes, ["push red", "push blue"], [0])
    assert split["trained"]["overall"]["success_mean"] == 1.0 and split["trained"]["overall"]["episodes"] == 2
    assert split["new"]["overall"]["success_mean"] == 0.5
    assert split["new"]["per_task"]["push_buttons"]["success_per_variation"] == {"7": 0.0, "8": 1.0}
    assert set(summarize_by_instruction(outcomes[:2], ["push red", "push blue"], [0])) == {"trained"}


def test_keyframe_errors_compare_each_predicted_keyframe_with_the_demo(run_dir, dataset, tmp_path):
    from mirror.evaluation.approach_errors import (
        APPROACH_FRACTIONS,
        APPROACH_NAME,
        APPROACH_SUMMARY_NAME,
        ApproachError,
        approach_errors,
        summarise_approach,
    )
    from mirror.evaluation.episode_data import keyframes_and_seed
    from mirror.evaluation.held_out import held_out_from_split
    from mirror.evaluation.keyframe_errors import (
        ERRORS_NAME,
        STEPS_NAME,
        SUMMARY_NAME,
        KeyframeError,
        other_variation_instruction,
        summarise,
        summarise_steps,
    )
    from mirror.evaluation.keyframe_errors import main as keyframe_errors_main

    out = tmp_path / "errors"
    argv = [
        "--checkpoints",
        str(run_dir),
        str(run_dir),
        "--names",
        "a",
        "b",
        "--out",
        str(out),
        "--approach",
        "--no-progress",
    ]
    assert keyframe_errors_main(argv) == 0
    rows = list(csv.DictReader((out / ERRORS_NAME).open()))
    episodes = held_out_from_split(run_dir / "split.json")
    expected = sum(len(keyframes_and_seed(e)[0]) for e in episodes)  # frame 0 + every keyframe but the last
    assert len(rows) == 2 * expected and {r["model"] for r in rows} == {"a", "b"}
    by_model = {name: [r["position_cm"] for r in rows if r["model"] == name] for name in ("a", "b")}
    assert by_model["a"] == by_model["b"]  # the same checkpoint twice
    assert all(float(r["position_cm"]) >= 0 and 0 <= float(r["rotation_deg"]) <= 180 for r in rows)
    assert all(float(r["coarse_cm"]) >= 0 for r in rows)
    summary = list(csv.DictReader((out / SUMMARY_NAME).open()))
    assert [r["task"] for r in summary if r["model"] == "a"][-1] == "all"
    # push_buttons variations 0 and 1 are both trained: each step is also acted under the other one
    assert all(float(r["instruction_shift_cm"]) >= 0 for r in rows)
    assert float(summary[-1]["instruction_shift_median_cm"]) >= 0
    assert 0 <= float(summary[-1]["instruction_shift_beyond_5cm_pct"]) <= 100
    vocabulary = list(MirrorModel.read_config(run_dir / "final")[0].instructions)
    own = make_task("push_buttons").descriptions(0)[0]
    other = other_variation_instruction("push_buttons", own, vocabulary)
    assert other in vocabulary and other not in make_task("push_buttons").descriptions(0)
    assert other_variation_instruction("push_buttons", own, [own]) is None
    # the summary's arithmetic on hand-made errors
    made = [KeyframeError("t", 0, 0, 0.5, 5.0, True), KeyframeError("t", 0, 1, 3.0, 20.0, False),
            KeyframeError("t", 0, 2, 6.0, 30.0, True)]  # fmt: skip
    row = summarise(made)[0]
    assert (row["keyframes"], row["position_median_cm"], row["rotation_median_deg"]) == (3, 3.0, 20.0)
    assert math.isnan(row["instruction_shift_median_cm"])  # no step had another instruction
    shifted = summarise([KeyframeError("t", 0, 0, 1.0, 1.0, True, s) for s in (0.2, 7.0, 9.0)])[0]
    assert shifted["instruction_shift_median_cm"] == 7.0
    assert shifted["instruction_shift_beyond_5cm_pct"] == pytest.approx(200 / 3)
    assert row["position_within_1cm_pct"] == pytest.approx(100 / 3)
    assert row["position_beyond_5cm_pct"] == pytest.approx(100 / 3)
    assert row["rotation_beyond_10deg_pct"] == pytest.approx(200 / 3)
    assert row["gripper_accuracy_pct"] == pytest.approx(200 / 3)
    # the first keyframe (step 0) picks the object: one episode of two lands 12 cm off
    picked = summarise([KeyframeError("t", 0, 0, 0.4, 1.0, True), KeyframeError("t", 0, 1, 9.0, 1.0, True),
                        KeyframeError("t", 1, 0, 12.0, 1.0, True)])[0]  # fmt: skip
    assert picked["first_keyframe_beyond_5cm_pct"] == 50.0
    assert math.isnan(picked["coarse_median_cm"])  # rows without the coarse point (older CSVs)
    # ... and whether the coarse stage already chose the other object: one first coarse point of two
    coarse = summarise([KeyframeError("t", 0, 0, 0.4, 1.0, True, coarse_cm=2.0),
                        KeyframeError("t", 0, 1, 9.0, 1.0, True, coarse_cm=3.0),
                        KeyframeError("t", 1, 0, 12.0, 1.0, True, coarse_cm=11.0)])[0]  # fmt: skip
    assert (coarse["coarse_median_cm"], coarse["first_keyframe_coarse_beyond_5cm_pct"]) == (3.0, 50.0)
    first, second = summarise_steps([*made, KeyframeError("t", 1, 0, 8.0, 9.0, True, coarse_cm=7.0)])[:2]
    assert (first["step"], first["keyframes"], first["position_median_cm"]) == (0, 2, 4.25)
    assert (first["position_beyond_5cm_pct"], first["coarse_median_cm"], first["coarse_beyond_5cm_pct"]) == (
        50.0, 7.0, 100.0)  # fmt: skip
    assert (second["step"], second["keyframes"], second["rotation_median_deg"]) == (1, 1, 20.0)
    assert math.isnan(second["coarse_median_cm"])
    steps = list(csv.DictReader((out / STEPS_NAME).open()))
    assert sum(int(r["keyframes"]) for r in steps) == len(rows)  # every row in one task-and-step group
    # --approach: step 0 from frames on the way to the first keyframe, the first of them frame 0
    approach = [r for r in csv.DictReader((out / APPROACH_NAME).open()) if r["model"] == "a"]
    assert len(approach) == len(episodes) * len(APPROACH_FRACTIONS)
    at_start = [r for r in approach if float(r["fraction"]) == 0.0]
    assert all(r["frame"] == "0" and float(r["moved_cm"]) == 0.0 for r in at_start)
    step0 = {r["episode"]: r["position_cm"] for r in rows if r["model"] == "a" and r["step"] == "0"}
    assert {r["episode"]: r["position_cm"] for r in at_start} == step0  # the same act as keyframe_errors'
    approach_summary = list(csv.DictReader((out / APPROACH_SUMMARY_NAME).open()))
    assert {float(r["fraction"]) for r in approach_summary} == set(APPROACH_FRACTIONS)
    made = [ApproachError("t", e, 0.0, 0, 0.0, cm) for e, cm in enumerate((0.3, 12.0, 28.0))]
    made += [ApproachError("t", e, 0.5, 20, moved, 0.4) for e, moved in enumerate((20.0, 26.0, 30.0))]
    start, half = summarise_approach(made)
    assert (start["episodes"], start["first_keyframe_beyond_5cm_pct"]) == (3, pytest.approx(200 / 3))
    assert (half["moved_median_cm"], half["first_keyframe_beyond_5cm_pct"]) == (26.0, 0.0)
    with pytest.raises(ValueError, match="fractions"):
        approach_errors(None, [], fractions=[1.0])
    # --from-errors summarises the written rows again without a model: the same summary, up to the rows'
    # rounding to 0.01
    again = tmp_path / "again"
    assert keyframe_errors_main(["--from-errors", str(out / ERRORS_NAME), "--out", str(again)]) == 0
    assert (again / ERRORS_NAME).read_text() == (out / ERRORS_NAME).read_text()
    resummarised = list(csv.DictReader((again / SUMMARY_NAME).open()))
    assert [(r["model"], r["task"]) for r in resummarised] == [(r["model"], r["task"]) for r in summary]
    for new, old in zip(resummarised, summary):
        for column, value in old.items():
            if column not in ("model", "task"):
                expected = pytest.approx(float(value or "nan"), abs=0.02, nan_ok=True)
                assert float(new[column] or "nan") == expected


def test_keyframe_errors_on_the_training_split(dataset, tmp_path):
    """--split-part train measures on the episodes the run trained on (memorisation vs generalisation)."""
    from mirror.evaluation.episode_data import keyframes_and_seed
    from mirror.evaluation.held_out import held_out_from_split
    from mirror.evaluation.keyframe_errors import ERRORS_NAME
    from mirror.evaluation.keyframe_errors import main as keyframe_errors_main

    run = tmp_path / "run"
    tiny_model(0).save_pretrained(run / "final")
    entries = scan_episodes(dataset)
    (run / "split.json").write_text(json.dumps(split_summary(entries[:1], entries[1:])))
    trained = held_out_from_split(run / "split.json", part="train")
    assert [e.record.path for e in trained] == [entries[0].record.path]
    out = tmp_path / "train_part"
    argv = ["--checkpoints", str(run), "--split-part", "train", "--out", str(out), "--no-progress"]
    assert keyframe_errors_main(argv) == 0
    rows = list(csv.DictReader((out / ERRORS_NAME).open()))
    assert len(rows) == len(keyframes_and_seed(trained[0])[0])
    assert {(r["task"], int(r["episode"])) for r in rows} == {(entries[0].task, entries[0].episode)}
    # --coarse-prior: the same steps, each keyframe placed with the coarse stage's prior
    fused = tmp_path / "fused"
    fused_argv = [*argv[:-3], "--out", str(fused), "--coarse-prior", "1", "--no-progress"]
    assert keyframe_errors_main(fused_argv) == 0
    fused_rows = list(csv.DictReader((fused / ERRORS_NAME).open()))
    assert [(r["episode"], r["step"], r["coarse_cm"]) for r in fused_rows] == [
        (r["episode"], r["step"], r["coarse_cm"]) for r in rows
    ]  # the coarse stage does not change; where the keyframe lands may
    with pytest.raises(ValueError, match="part must be one of"):
        held_out_from_split(run / "split.json", part="test")

    # --split: every model on one split's episodes (another run's), whatever its own split.json says
    other = tmp_path / "other_split.json"
    other.write_text(json.dumps(split_summary(entries[1:], entries[:1])))
    out = tmp_path / "other_split"
    argv = ["--checkpoints", str(run), "--split", str(other), "--split-part", "train", "--out", str(out)]
    assert keyframe_errors_main([*argv, "--no-progress"]) == 0
    rows = list(csv.DictReader((out / ERRORS_NAME).open()))
    assert {(r["task"], int(r["episode"])) for r in rows} == {(e.task, e.episode) for e in entries[1:]}
    with pytest.raises(SystemExit):
        keyframe_errors_main([*argv, "--data", str(dataset)])
