"""Recognition's confusion matrix and per-instruction accuracy, from hand-built records to results.json,
``confusion_<model>.csv`` and the heatmap."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from mirror.evaluation import plots
from mirror.evaluation.recognition import (
    ConfusionMatrix,
    RecognitionRecord,
    confusion_matrix,
    summarize_recognition,
)
from mirror.evaluation.reporting import CONFUSION_CORNER, confusion_file, write_results

TOP = "open the top drawer"
BOTTOM = "open the bottom drawer"
LEFT = "turn left tap"
RIGHT = "turn right tap"


def record(task: str, episode: int, truth: str, *guesses: str) -> RecognitionRecord:
    ranked = [(g, 0.9 - 0.1 * i) for i, g in enumerate(guesses)]
    return RecognitionRecord(task, episode, 0, truth, ranked, in_vocabulary=True)


RECORDS = [
    record("open_drawer", 0, TOP, TOP, BOTTOM),
    record("open_drawer", 1, TOP, BOTTOM, TOP),
    record("open_drawer", 2, BOTTOM, BOTTOM, TOP),
    record("turn_tap", 0, LEFT, RIGHT, LEFT),
    record("turn_tap", 1, LEFT, RIGHT, LEFT),
    record("turn_tap", 2, RIGHT, RIGHT, LEFT),
    record("turn_tap", 3, RIGHT, TOP, RIGHT),
]


def test_confusion_counts_true_rows_against_predicted_columns():
    matrix = confusion_matrix(RECORDS)
    assert matrix.labels == (BOTTOM, TOP, LEFT, RIGHT)  # sorted
    assert matrix.counts.tolist() == [
        [1, 0, 0, 0],  # bottom: right
        [1, 1, 0, 0],  # top: once right, once taken for bottom
        [0, 0, 0, 2],  # left: always taken for right
        [0, 1, 0, 1],  # right: once right, once taken for the top drawer
    ]
    assert matrix.counts.sum() == len(RECORDS) and np.trace(matrix.counts) == 3
    back = ConfusionMatrix.from_dict(json.loads(json.dumps(matrix.to_dict())))
    assert back.labels == matrix.labels and np.array_equal(back.counts, matrix.counts)


def test_labels_fix_the_order_and_may_add_unseen_instructions():
    labels = [LEFT, RIGHT, TOP, BOTTOM, "push the maroon button"]
    matrix = confusion_matrix(RECORDS, labels)
    assert matrix.labels == tuple(labels)
    assert matrix.counts[0].tolist() == [0, 2, 0, 0, 0] and matrix.counts[4].tolist() == [0] * 5
    with pytest.raises(ValueError, match="lack instructions"):
        confusion_matrix(RECORDS, [LEFT, RIGHT])
    with pytest.raises(ValueError, match="repeat"):
        confusion_matrix(RECORDS, [LEFT, LEFT, RIGHT, TOP, BOTTOM])
    with pytest.raises(ValueError, match="no recognition records"):
        confusion_matrix([])


def test_malformed_confusion_data_is_a_clear_error():
    with pytest.raises(ValueError, match="labels"):
        ConfusionMatrix.from_dict({"counts": [[1]]})
    with pytest.raises(ValueError, match="2x2"):
        ConfusionMatrix.from_dict({"labels": [TOP, BOTTOM], "counts": [[1, 0]]})
    with pytest.raises(ValueError, match="non-negative"):
        ConfusionMatrix(("a",), np.array([[-1]]))


def test_summary_holds_per_instruction_accuracy_and_the_matrix():
    summary = summarize_recognition(RECORDS, vocabulary_size=8, top_k=2)
    per = summary["per_instruction"]
    assert per[TOP] == {"top1": 0.5, "top2": 1.0, "episodes": 2}
    assert per[BOTTOM] == {"top1": 1.0, "top2": 1.0, "episodes": 1}
    assert per[LEFT] == {"top1": 0.0, "top2": 1.0, "episodes": 2}
    assert per[RIGHT] == {"top1": 0.5, "top2": 1.0, "episodes": 2}
    assert summary["confusion"] == confusion_matrix(RECORDS).to_dict()
    assert summary["overall"]["top1"] == pytest.approx(3 / 7)


def test_evaluate_outputs_write_the_confusion_csv_and_heatmap(tmp_path):
    results = {
        "models": {
            "mirror/v1": {"checkpoint": "runs/mirror", "recognition": summarize_recognition(RECORDS, 8, 2)},
            "rollouts only": {"checkpoint": "runs/other"},
        }
    }
    paths = write_results(tmp_path, results)
    csv_path = tmp_path / "confusion_mirror_v1.csv"
    assert (
        paths["confusion_csv_mirror/v1"] == csv_path and confusion_file("mirror/v1", "csv") == csv_path.name
    )
    assert not any("rollouts only" in key for key in paths)
    rows = list(csv.reader(csv_path.open(encoding="utf-8")))
    assert rows == [
        [CONFUSION_CORNER, BOTTOM, TOP, LEFT, RIGHT],
        [BOTTOM, "1", "0", "0", "0"],
        [TOP, "1", "1", "0", "0"],
        [LEFT, "0", "0", "0", "2"],
        [RIGHT, "0", "1", "0", "1"],
    ]
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["models"]["mirror/v1"]["recognition"]["per_instruction"][LEFT]["top1"] == 0.0

    png = plots.plot_confusion(
        written["models"]["mirror/v1"]["recognition"]["confusion"],
        tmp_path / plots.confusion_plot_name("mirror/v1"),
        "mirror/v1",
    )
    assert png.name == "confusion_mirror_v1.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
