"""compare_rollouts: two evaluations' rollouts paired by scene, with McNemar's exact (sign) test."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mirror.evaluation.compare_rollouts import main, sign_test_p


def rollout(task: str, episode: int, success: bool, eval_seed: int = 0, blind: bool = False) -> dict:
    return {
        "task": task, "variation": episode % 2, "instruction": f"{task} {episode % 2}",
        "eval_seed": eval_seed, "episode": episode, "env_seed": 1000 * eval_seed + episode,
        "success": success, "blind": blind,
    }  # fmt: skip


def write_results(path: Path, models: dict[str, dict[str, list[dict]]]) -> Path:
    """A results.json as evaluate writes it, reduced to what the comparison reads."""
    body = {name: {key: {"episodes": episodes} for key, episodes in conditions.items()}
            for name, conditions in models.items()}  # fmt: skip
    path.write_text(json.dumps({"protocol": {}, "models": body}))
    return path


def successes(task: str, solved: set[int], n: int = 10, **kwargs) -> list[dict]:
    return [rollout(task, i, i in solved, **kwargs) for i in range(n)]


def compared(tmp_path: Path, *extra: str) -> dict[tuple[str, str], dict]:
    out = tmp_path / "compare.csv"
    assert main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(out), *extra]) == 0
    with out.open() as handle:
        return {(r["condition"], r["task"]): r for r in csv.DictReader(handle)}


def refusal(tmp_path: Path, capsys) -> str:
    """The one-line error of a refused comparison (exit code 2, nothing written)."""
    assert main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(tmp_path / "c.csv")]) == 2
    assert not (tmp_path / "c.csv").exists()
    return capsys.readouterr().err


def test_discordant_scenes_and_the_exact_sign_test(tmp_path: Path) -> None:
    """Push: a solves 0-7, b solves 5-9 -> 5 scenes by a alone, 2 by b alone (p = 0.453, exact binomial)."""
    write_results(tmp_path / "a.json", {"new": {"execution": successes("push", set(range(8)))
                                                + successes("tap", {0})}})  # fmt: skip
    write_results(tmp_path / "b.json", {"old": {"execution": successes("push", set(range(5, 10)))
                                                + successes("tap", {0, 1})}})  # fmt: skip
    rows = compared(tmp_path)
    push = rows[("instructed", "push")]
    assert (push["a"], push["b"], push["scenes"]) == ("new", "old", "10")
    assert (push["a_successes"], push["b_successes"], push["a_only"], push["b_only"]) == ("8", "5", "5", "2")
    assert push["sign_test_p"] == "0.453"  # 2 * P(X <= 2), X ~ B(7, 1/2) = 0.453125
    total = rows[("instructed", "all")]
    assert (total["scenes"], total["a_only"], total["b_only"]) == ("20", "5", "3")
    assert not any(condition == "blind" for condition, _ in rows)  # neither file has a blind control


def test_sign_test_p_is_the_exact_two_sided_binomial() -> None:
    assert sign_test_p(10, 0) == pytest.approx(2 / 2**10)
    assert sign_test_p(0, 0) == 1.0
    assert sign_test_p(3, 3) == pytest.approx(1.0)


def test_the_blind_control_is_compared_where_both_have_it(tmp_path: Path) -> None:
    instructed, blind = successes("push", {1, 2}), successes("push", set(), blind=True)
    write_results(tmp_path / "a.json", {"a": {"execution": instructed, "execution_blind": blind}})
    write_results(tmp_path / "b.json", {"b": {"execution": instructed, "execution_blind": successes(
        "push", {4}, blind=True)}})  # fmt: skip
    rows = compared(tmp_path, "--names", "x", "y")
    assert rows[("instructed", "all")]["a_only"] == "0"
    assert (rows[("blind", "push")]["b_only"], rows[("blind", "push")]["a"]) == ("1", "x")


def test_different_scenes_are_refused(tmp_path: Path, capsys) -> None:
    write_results(tmp_path / "a.json", {"a": {"execution": successes("push", {1})}})
    write_results(tmp_path / "b.json", {"b": {"execution": successes("push", {1}, eval_seed=1)}})
    assert "not the same scenes: 10 only in a, 10 only in b" in refusal(tmp_path, capsys)


def test_tasks_compares_the_subset_both_evaluated(tmp_path: Path, capsys) -> None:
    write_results(tmp_path / "a.json", {"a": {"execution": successes("push", {1})}})
    write_results(tmp_path / "b.json", {"b": {"execution": successes("push", {2}) + successes("tap", {3})}})
    assert "0 only in a, 10 only in b" in refusal(tmp_path, capsys)
    rows = compared(tmp_path, "--tasks", "push")
    assert set(rows) == {("instructed", "push"), ("instructed", "all")}
    assert (rows[("instructed", "all")]["a_only"], rows[("instructed", "all")]["b_only"]) == ("1", "1")


def test_a_file_with_several_models_needs_the_model_named(tmp_path: Path, capsys) -> None:
    write_results(tmp_path / "a.json", {"m1": {"execution": successes("push", {1})},
                                        "m2": {"execution": successes("push", {1, 2})}})  # fmt: skip
    write_results(tmp_path / "b.json", {"b": {"execution": successes("push", set())}})
    assert "name the model to compare" in refusal(tmp_path, capsys)
    rows = compared(tmp_path, "--models", "m2", "b")
    assert rows[("instructed", "all")]["a_successes"] == "2"


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not an evaluate results.json"),
     (json.dumps({"models": {"a": {"recognition": {}}}}), "has no rollouts"),
     (json.dumps({"models": {"a": {"execution": {"episodes": [{"task": "push"}]}}}}), "a rollout without")],
)  # fmt: skip
def test_malformed_results_are_refused_with_the_reason(
    tmp_path: Path, capsys, content: str, message: str
) -> None:
    (tmp_path / "a.json").write_text(content)
    write_results(tmp_path / "b.json", {"b": {"execution": successes("push", set())}})
    assert message in refusal(tmp_path, capsys)
