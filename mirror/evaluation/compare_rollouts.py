"""``compare_rollouts``: two models' rollouts paired scene by scene, with an exact sign test.

Two success rates on the same scenes say more paired than side by side: a scene both models solve (or both
fail) carries no evidence of a difference, so the test looks only at the discordant scenes, those one model
solved and the other did not. Under "no difference" each discordant scene is a fair coin, and the two-sided
exact binomial (sign) test on them gives the p-value (McNemar's exact test).

Reads two ``results.json`` written by ``evaluate`` (or a ``mirror_study`` run's ``eval/``) and pairs their
rollouts by task, variation, instruction, evaluation seed, episode and scene seed; both files must hold the
same scenes (run with the same ``--episodes``, ``--eval-seeds``, tasks and variations), or the comparison is
refused (``--tasks`` compares a subset both ran). Writes one row per condition (instructed, and the blind
control where both have it) and task, plus an ``all`` row:

    compare_rollouts checkpoints/mirror_cpu_small/evaluation/results.json \\
        docs/results/stage4_evaluation/results.json --names stage5 stage4 --out compare.csv
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from scipy import stats

from mirror.evaluation.errors import EvaluationError
from mirror.evaluation.reporting import write_csv
from mirror_common.cli import console_main

log = logging.getLogger("compare_rollouts")

ALL = "all"
CONDITIONS = {"instructed": "execution", "blind": "execution_blind"}
SCENE_FIELDS = ("task", "variation", "instruction", "eval_seed", "episode", "env_seed")
COLUMNS = (
    "condition", "task", "scenes", "a", "b", "a_successes", "b_successes", "a_only", "b_only",
    "sign_test_p",
)  # fmt: skip

SceneKey = tuple


def load_rollouts(path: Path, model: str | None) -> tuple[str, dict[str, dict[SceneKey, bool]]]:
    """``model`` (the file's only model if None) and, per condition present in ``path``, its success by
    scene key."""
    try:
        models = json.loads(path.read_text(encoding="utf-8"))["models"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise EvaluationError(f"{path}: not an evaluate results.json ({err})") from err
    if model is None:
        if len(models) != 1:
            raise EvaluationError(f"{path} holds {sorted(models)}: name the model to compare (--models)")
        model = next(iter(models))
    if model not in models:
        raise EvaluationError(f"{path} has no model {model!r}; it has {sorted(models)}")
    out = {}
    for condition, key in CONDITIONS.items():
        episodes = models[model].get(key, {}).get("episodes")
        if not episodes:
            continue
        try:
            scenes = {tuple(e[f] for f in SCENE_FIELDS): bool(e["success"]) for e in episodes}
        except (KeyError, TypeError) as err:
            raise EvaluationError(f"{path}: {key} has a rollout without {err}") from err
        if len(scenes) != len(episodes):
            raise EvaluationError(f"{path}: {key} has {len(episodes) - len(scenes)} repeated scene(s)")
        out[condition] = scenes
    if "instructed" not in out:
        raise EvaluationError(f"{path}: model {model!r} has no rollouts (evaluated with --skip-rollouts?)")
    return model, out


def sign_test_p(a_only: int, b_only: int) -> float:
    """Two-sided exact binomial test of ``a_only`` against ``b_only`` discordant pairs (1 without any)."""
    discordant = a_only + b_only
    return 1.0 if discordant == 0 else float(stats.binomtest(a_only, discordant, 0.5).pvalue)


def paired_row(condition: str, task: str, names: tuple[str, str], a: list[bool], b: list[bool]) -> dict:
    """One row of paired counts: successes of each model, scenes solved by one alone, and the sign test."""
    a_only = sum(x and not y for x, y in zip(a, b, strict=True))
    b_only = sum(y and not x for x, y in zip(a, b, strict=True))
    return {
        "condition": condition, "task": task, "scenes": len(a), "a": names[0], "b": names[1],
        "a_successes": sum(a), "b_successes": sum(b), "a_only": a_only, "b_only": b_only,
        "sign_test_p": f"{sign_test_p(a_only, b_only):.3g}",
    }  # fmt: skip


def compare(
    a: dict[str, dict[SceneKey, bool]],
    b: dict[str, dict[SceneKey, bool]],
    names: tuple[str, str],
    tasks: Sequence[str] = (),
) -> list[dict]:
    """Rows for every condition both sides have, on ``tasks`` only if given; EvaluationError when their
    scenes differ."""
    rows = []
    for condition in (c for c in CONDITIONS if c in a and c in b):
        scenes_a, scenes_b = ({k: v for k, v in side[condition].items() if not tasks or k[0] in tasks}
                              for side in (a, b))  # fmt: skip
        if not scenes_a and not scenes_b:
            raise EvaluationError(f"no {condition} rollouts of {list(tasks)} in either file")
        if scenes_a.keys() != scenes_b.keys():
            only_a, only_b = len(scenes_a.keys() - scenes_b.keys()), len(scenes_b.keys() - scenes_a.keys())
            raise EvaluationError(
                f"{condition} rollouts are not the same scenes: {only_a} only in {names[0]}, {only_b} only "
                f"in {names[1]} (evaluate both with the same --episodes, --eval-seeds, tasks and variations)"
            )
        keys = list(scenes_a)
        for task in [*sorted({k[0] for k in keys}), ALL]:
            mine = [k for k in keys if task in (ALL, k[0])]
            rows.append(
                paired_row(condition, task, names, [scenes_a[k] for k in mine], [scenes_b[k] for k in mine])
            )
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", type=Path, nargs=2, help="two evaluate results.json files (a, then b)")
    parser.add_argument("--models", nargs=2, default=None, metavar=("A", "B"),
                        help="the model to take from each file (default: the file's only model)")  # fmt: skip
    parser.add_argument("--names", nargs=2, default=None, metavar=("A", "B"),
                        help="labels for the CSV (default: the models' names)")  # fmt: skip
    parser.add_argument("--tasks", nargs="+", default=[],
                        help="compare these tasks only (e.g. where one evaluation ran a subset)")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="the CSV to write")
    return parser.parse_args(argv)


@console_main
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    models = args.models or (None, None)
    (model_a, a), (model_b, b) = (
        load_rollouts(path, model) for path, model in zip(args.results, models, strict=True)
    )  # an EvaluationError ends the command with its message (console_main)
    rows = compare(a, b, tuple(args.names or (model_a, model_b)), args.tasks)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(args.out, COLUMNS, rows)
    for row in rows:
        log.info("%s %s: %s %d vs %s %d of %d; %d scenes by %s alone, %d by %s alone; sign test p = %s",
                 row["condition"], row["task"], row["a"], row["a_successes"], row["b"], row["b_successes"],
                 row["scenes"], row["a_only"], row["a"], row["b_only"], row["b"],
                 row["sign_test_p"])  # fmt: skip
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
