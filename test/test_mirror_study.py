"""mirror_study: both arms over training seeds on the tiny dataset, CSVs with intervals, resume, errors."""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from mirror_test_data import SMALL, build_tiny_dataset

from mirror.evaluation.mirror_study import (
    RUN_COLUMNS,
    Arm,
    ProtocolMismatchError,
    comparable_config,
    finished_rows,
    interval,
    main,
    protocol_differences,
    row_from_other_study,
    summary_rows,
    train_arm,
    trained_runs,
)
from mirror.model import MirrorModel
from mirror.training.config import TrainConfig
from mirror.training.run_directory import CHECKPOINTS_DIR, FINAL_DIR

REPO = Path(__file__).resolve().parents[1]


def study_args(out: Path, results: Path) -> list[str]:
    args = [
        "--config",
        str(REPO / "config" / "train_cpu_small.yaml"),
        "--data",
        str(build_tiny_dataset()),
        "--out",
        str(out),
        "--results",
        str(results),
        "--seeds",
        "0",
        "1",
        "--steps",
        "2",
        "--episodes",
        "1",
        "--eval-seeds",
        "0",
        "--probe-steps",
        "2",
        "--max-steps",
        "2",
        "--no-progress",
        "--rollout-alignment",
    ]
    for item in [*SMALL, "precision=fp32", "threads=1"]:
        args += ["--set", item]
    return args  # fmt: skip


def read(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_study_trains_both_arms_per_seed_and_summarises(tmp_path: Path, caplog) -> None:
    out, results = tmp_path / "runs", tmp_path / "results"
    assert main([*study_args(out, results), "--train-jobs", "2"]) == 0  # two trainings at once
    rows = read(results / "mirror_vs_baseline.csv")
    assert [(r["arm"], r["train_seed"]) for r in rows] == [
        ("mirror", "0"), ("baseline", "0"), ("mirror", "1"), ("baseline", "1"),
    ]  # fmt: skip
    assert set(RUN_COLUMNS) | {"success_push_buttons", "success_blind_push_buttons"} <= set(rows[0])
    for prefix in ("success", "success_blind"):  # the variation the one rollout drew
        assert any(re.fullmatch(f"{prefix}_push_buttons_v[0-9]+", k) for k in rows[0])
    evaluated = json.loads((out / "mirror_seed0" / "eval" / "results.json").read_text())["models"]
    assert evaluated["mirror_seed0"]["alignment_probe"]["pairing"] == "instruction"  # every arm's, --pairing
    split = evaluated["mirror_seed0"]["rollout_alignment_probe"]  # paper Fig. 3, through probed heads
    assert split["succeeded"]["rollouts"] + split["failed"]["rollouts"] == 1
    for row in rows:
        assert row["policy_text"] == "own"
        assert all(0.0 <= float(row[k]) <= 1.0 for k in RUN_COLUMNS[3:]), row
    # the arms differ only in the alignment weight; the baseline's heads never trained
    mirror = MirrorModel.read_extra(out / "mirror_seed0" / "final")["train_config"]
    baseline = MirrorModel.read_extra(out / "baseline_seed0" / "final")["train_config"]
    assert {k for k in mirror if mirror[k] != baseline[k]} == {"align_weight", "out"}
    assert mirror["policy_text"] == baseline["policy_text"] == "own"
    assert baseline["align_weight"] == 0 and mirror["align_weight"] > 0
    summary = {(r["metric"], r["arm"]): r for r in read(results / "mirror_vs_baseline_summary.csv")}
    mirror_row = summary[("recall_u2e_probe", "mirror")]
    assert mirror_row["paired_seeds"] == "2" and mirror_row["reference"] == "baseline"
    assert summary[("recall_u2e_probe", "baseline")]["difference_mean"] == ""  # the reference itself
    differences = [
        float(rows[i]["recall_u2e_probe"]) - float(rows[i + 1]["recall_u2e_probe"]) for i in (0, 2)
    ]
    assert float(mirror_row["difference_mean"]) == pytest.approx(np.mean(differences), abs=1e-4)
    assert (results / "mirror_vs_baseline.png").stat().st_size > 0
    caplog.set_level(logging.INFO)
    table = results / "mirror_vs_baseline.csv"
    before = table.read_text()
    assert main(study_args(out, results)) == 0  # everything is done: nothing retrains or re-evaluates
    assert caplog.text.count("in mirror_vs_baseline.csv, skipped") == 4
    assert table.read_text() == before

    # a row lost from the table comes back from its run folder, without training or evaluating again
    lines = before.splitlines(keepends=True)
    table.write_text("".join(lines[:-1]))
    caplog.clear()
    assert main(study_args(out, results)) == 0
    assert caplog.text.count("trained, skipped") == 1 and caplog.text.count("evaluated, skipped") == 1
    assert table.read_text() == before

    # another session, its run folders gone: the committed rows are the study's state
    shutil.rmtree(out)
    summary_before = (results / "mirror_vs_baseline_summary.csv").read_text()
    assert main(study_args(out, results)) == 0 and not out.exists()
    assert table.read_text() == before
    assert (results / "mirror_vs_baseline_summary.csv").read_text() == summary_before

    caplog.clear()  # --status says where each run stands and changes nothing
    assert main([*study_args(out, results), "--seeds", "0", "1", "2", "--status"]) == 0
    assert "mirror_seed2: to do" in caplog.text and "4 of 6 runs have their row" in caplog.text
    assert not out.exists() and table.read_text() == before

    # a different protocol is refused, and nothing is lost
    caplog.clear()
    assert main([*study_args(out, results), "--episodes", "2"]) == 2
    assert "evaluation.episodes: 1 -> 2" in caplog.text and not out.exists()
    assert table.read_text() == before


def test_intervals_and_paired_differences() -> None:
    mean, low, high = interval([0.2, 0.4, 0.6])
    assert mean == pytest.approx(0.4) and low == pytest.approx(0.4 - 4.302653 * 0.2 / np.sqrt(3))
    assert np.isnan(interval([0.5])[1])
    rows = [{"arm": arm, "train_seed": seed, **dict.fromkeys(RUN_COLUMNS[3:], value)}
            for arm, seed, value in (("mirror", 0, 0.5), ("baseline", 0, 0.3), ("mirror", 1, 0.7),
                                     ("baseline", 2, 0.1))]  # fmt: skip
    summary = {(r["metric"], r["arm"]): r for r in summary_rows(rows, "baseline")}
    mirror, baseline = summary[("success_mean", "mirror")], summary[("success_mean", "baseline")]
    assert mirror["paired_seeds"] == 1 and mirror["difference_mean"] == pytest.approx(0.2)
    assert mirror["mean"] == pytest.approx(0.6) and baseline["mean"] == pytest.approx(0.2)
    assert "difference_mean" not in baseline


def test_arms_parse_and_bad_arms_are_refused(tmp_path: Path) -> None:
    assert Arm.parse("lambda0.25:align_weight=0.25,alignment.pairing=class") == Arm(
        "lambda0.25", ("align_weight=0.25", "alignment.pairing=class")
    )
    assert Arm.parse("mirror:") == Arm("mirror", ())
    args = study_args(tmp_path / "runs", tmp_path / "results")
    for bad in (
        ["--arm", "a b:"],
        ["--arm", "x:align_weight"],
        ["--arm", "a:", "--arm", "a:"],
        ["--arm", "a:"],
    ):
        with pytest.raises(SystemExit):
            main([*args, *bad])  # the last: the reference "baseline" is not an arm


def test_bad_settings_fail_before_any_run(tmp_path: Path, caplog) -> None:
    args = study_args(tmp_path / "runs", tmp_path / "results")
    assert main([*args, "--set", "batch_size=1"]) == 2
    assert "batch_size" in caplog.text and not (tmp_path / "runs").exists()
    for bad in (["--probe-steps", "0"], ["--train-jobs", "0"]):
        with pytest.raises(SystemExit):
            main([*args, *bad])


def test_a_metric_one_run_lacks_is_left_out_of_its_mean_and_pairs() -> None:
    rows = [{"arm": arm, "train_seed": str(seed), "rollout_recall_failed_probe": value}
            for arm, seed, value in (("mirror", 0, "0.5"), ("baseline", 0, "0.3"), ("mirror", 1, ""),
                                     ("baseline", 1, "0.1"))]  # fmt: skip
    summary = {(r["metric"], r["arm"]): r for r in summary_rows(rows, "baseline")}
    mirror = summary[("rollout_recall_failed_probe", "mirror")]
    assert mirror["seeds"] == 2 and mirror["mean"] == pytest.approx(0.5)
    assert mirror["paired_seeds"] == 1 and mirror["difference_mean"] == pytest.approx(0.2)


def test_rows_are_only_reused_under_the_protocol_they_were_made_under(tmp_path: Path) -> None:
    protocol = {"arms": {"mirror": {"train_config": {"steps": 10}}}, "data_fingerprint": "abc"}
    assert finished_rows(tmp_path, "study", protocol) == {}  # a new study records its protocol
    assert json.loads((tmp_path / "study_protocol.json").read_text()) == protocol
    (tmp_path / "study.csv").write_text("arm,train_seed,success_mean\nmirror,3,0.5\n")
    assert finished_rows(tmp_path, "study", protocol) == {
        ("mirror", 3): {"arm": "mirror", "train_seed": "3", "success_mean": "0.5"}
    }
    changed = {"arms": {"mirror": {"train_config": {"steps": 20}}}, "data_fingerprint": "abd"}
    assert protocol_differences(protocol, changed) == [
        "arms.mirror.train_config.steps: 10 -> 20", "data_fingerprint: 'abc' -> 'abd'",
    ]  # fmt: skip
    with pytest.raises(ProtocolMismatchError, match="another protocol .*steps: 10 -> 20"):
        finished_rows(tmp_path, "study", changed)
    (tmp_path / "study_protocol.json").unlink()
    with pytest.raises(ProtocolMismatchError, match="missing or unreadable"):
        finished_rows(tmp_path, "study", protocol)
    assert (tmp_path / "study.csv").read_text().endswith("mirror,3,0.5\n")  # nothing lost


def test_rows_made_before_a_setting_existed_match_it_at_its_default(tmp_path: Path) -> None:
    """A run recorded before ``optim.arp_layer_adaptation`` existed trained as its default ("all") does."""
    today = comparable_config(TrainConfig().to_dict())
    before = {**today, "optim": {k: v for k, v in today["optim"].items() if k != "arp_layer_adaptation"}}
    finished_rows(tmp_path, "study", {"arms": {"mirror": {"train_config": before}}})
    (tmp_path / "study.csv").write_text("arm,train_seed,success_mean\nmirror,0,0.5\n")
    assert set(finished_rows(tmp_path, "study", {"arms": {"mirror": {"train_config": today}}})) == {
        ("mirror", 0)
    }
    assert row_from_other_study(tmp_path, "ablation", {"arms": {"a": {"train_config": today}}}, "a", 0)
    changed = {**today, "optim": {**today["optim"], "arp_layer_adaptation": "weights"}}
    with pytest.raises(ProtocolMismatchError, match="arp_layer_adaptation: 'all' -> 'weights'"):
        finished_rows(tmp_path, "study", {"arms": {"mirror": {"train_config": changed}}})


def test_rows_scored_with_each_arms_own_pairing_match_one_pairing_only_where_all_arms_share_it(
    tmp_path: Path,
) -> None:
    """Before the evaluation recorded its pairing, each arm was scored (and probed) with its own training
    pairing: a study whose arms all trained on instruction pairs was scored on instruction pairs."""
    today = comparable_config(TrainConfig().to_dict())
    episode = {**today, "alignment": {**today["alignment"], "pairing": "episode"}}
    before, now = {"episodes": 10}, {"episodes": 10, "pairing": "instruction"}
    arms = {"mirror": {"train_config": today}, "baseline": {"train_config": {**today, "align_weight": 0}}}
    finished_rows(tmp_path, "main", {"arms": arms, "evaluation": before})
    (tmp_path / "main.csv").write_text("arm,train_seed,success_mean\nmirror,0,0.5\n")
    assert set(finished_rows(tmp_path, "main", {"arms": arms, "evaluation": now})) == {("mirror", 0)}
    assert json.loads((tmp_path / "main_protocol.json").read_text())["evaluation"] == now

    mixed = {"instruction": {"train_config": today}, "episode": {"train_config": episode}}
    finished_rows(tmp_path, "ablation", {"arms": mixed, "evaluation": before})
    (tmp_path / "ablation.csv").write_text("arm,train_seed,success_mean\nepisode,0,0.5\n")
    with pytest.raises(ProtocolMismatchError, match="evaluation.pairing: None -> 'instruction'"):
        finished_rows(tmp_path, "ablation", {"arms": mixed, "evaluation": now})
    episode_scored = {"episodes": 10, "pairing": "episode"}
    assert row_from_other_study(tmp_path, "x", {"arms": mixed, "evaluation": now}, "instruction", 0)
    assert not row_from_other_study(
        tmp_path, "x", {"arms": mixed, "evaluation": episode_scored}, "instruction", 0
    )


def test_arms_may_be_added_and_the_same_run_is_taken_from_another_study(tmp_path: Path) -> None:
    trained = {"align_weight": 0.5, "steps": 10}
    main_study = {"arms": {"mirror": {"train_config": trained}}, "evaluation": {"episodes": 10}}
    finished_rows(tmp_path, "main", main_study)
    (tmp_path / "main.csv").write_text("arm,train_seed,success_mean\nmirror,0,0.5\n")
    added = {**main_study, "arms": {"lambda1": {"train_config": {**trained, "align_weight": 1.0}}}}
    assert set(finished_rows(tmp_path, "main", added)) == {("mirror", 0)}
    assert set(json.loads((tmp_path / "main_protocol.json").read_text())["arms"]) == {"mirror", "lambda1"}

    ablation = {**main_study, "arms": {"instruction": {"train_config": trained}, **added["arms"]}}
    finished_rows(tmp_path, "ablation", ablation)
    row = row_from_other_study(tmp_path, "ablation", ablation, "instruction", 0)
    assert row == {"arm": "instruction", "train_seed": "0", "success_mean": "0.5"}
    assert row_from_other_study(tmp_path, "ablation", ablation, "instruction", 1) is None  # no such seed
    assert row_from_other_study(tmp_path, "ablation", ablation, "lambda1", 0) is None  # never run
    elsewhere = {**ablation, "evaluation": {"episodes": 20}}
    assert row_from_other_study(tmp_path, "other", elsewhere, "instruction", 0) is None


def record_training(log_dir: Path, name: str) -> None:
    """A stand-in training for the scheduler test (module level: spawned workers import it)."""
    (log_dir / f"{name}.start").write_text(str(time.time()))
    time.sleep(0.4)
    (log_dir / f"{name}.end").write_text(str(time.time()))


@pytest.mark.slow
def test_parallel_training_counts_the_callers_evaluation_as_a_slot(tmp_path: Path) -> None:
    """Two jobs at once at most, evaluation included: each training holds its dataset in memory."""
    jobs = [(tmp_path, f"run{k}") for k in range(4)]
    evaluations = []
    for job in trained_runs(jobs, 2, train=record_training):
        assert (tmp_path / f"{job[1]}.end").is_file()  # yielded once its training ended
        start = time.time()
        time.sleep(0.4)
        evaluations.append((start, time.time()))
    intervals = [
        (float((tmp_path / f"{name}.start").read_text()), float((tmp_path / f"{name}.end").read_text()))
        for _, name in jobs
    ] + evaluations
    for moment in [begin + 1e-3 for begin, _ in intervals]:
        assert sum(begin <= moment < end for begin, end in intervals) <= 2
    assert len(evaluations) == 4


@pytest.mark.parametrize("left_behind", ["metrics", "incomplete checkpoint"])
def test_a_run_stopped_before_its_first_checkpoint_trains_again(tmp_path: Path, left_behind: str) -> None:
    """A study stopped during a run's first checkpoint interval leaves a folder with nothing to resume; the
    next study trains that run again from step 0 (it is seeded) instead of failing on the folder."""
    run_dir = tmp_path / "mirror_seed0"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 250}\n')
    if left_behind == "incomplete checkpoint":
        (run_dir / CHECKPOINTS_DIR / "step_00000250").mkdir(parents=True)  # no trainer state yet
    extra = ["--steps", "2", "--no-progress"]
    for item in [*SMALL, "precision=fp32", "threads=1"]:
        extra += ["--set", item]
    train_arm(
        REPO / "config" / "train_cpu_small.yaml", build_tiny_dataset(), run_dir, Arm("mirror", ()), 0, extra
    )
    assert (run_dir / FINAL_DIR).is_dir()
    assert '"step": 250' not in (run_dir / "metrics.jsonl").read_text()
