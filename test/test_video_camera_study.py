"""video_camera_study: one AU-only run per camera on the tiny dataset, CSV + plot, resume, clear errors."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from mirror_test_data import build_tiny_dataset

from mirror.evaluation.video_camera_study import STUDY_CSV_NAME, STUDY_PNG_NAME, CameraRun, main
from mirror.training.config import load_train_config
from mirror.training.data import scan_episodes, split_episodes
from mirror_perception.demonstration import demonstration_clip_indices
from sim_bridge.dataset import load_episode

TINY = """
viclip: {preset: cpu_tiny, vision_width: 64, vision_layers: 1, text_width: 64, text_layers: 1, embed_dim: 32}
data: {holdout_fraction: 0.25}
optim: {video_lr: 1.0e-3, warmup_steps: 1}
batch_size: 2
au_negatives: vocabulary
precision: fp32
threads: 1
"""


@pytest.fixture(scope="module")
def data_root() -> Path:
    return build_tiny_dataset()


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def test_each_camera_trains_on_its_own_video(data_root: Path, tiny_config: Path) -> None:
    config = load_train_config(tiny_config, [f"data.root={data_root}", "steps=2"])
    train, held_out = split_episodes(scan_episodes(data_root), 0.25)
    run = CameraRun(config, "wrist", train, held_out)
    entry = held_out[0]
    indices = demonstration_clip_indices(entry.length, run.clip_frames)
    episode = load_episode(entry.record, cameras=["wrist"], frames=indices)
    np.testing.assert_array_equal(
        run.held_out_clips[0], np.stack([o.camera("wrist").rgb for o in episode.observations])
    )
    before = run.held_out_top1()
    assert 0.0 <= before <= 100.0
    losses = [run.train_step(step) for step in range(2)]
    assert all(np.isfinite(losses))


def test_study_writes_rows_and_plot_and_resumes(
    data_root: Path, tiny_config: Path, tmp_path: Path, caplog
) -> None:
    out = tmp_path / "study"
    args = ["--data", str(data_root), "--out", str(out), "--config", str(tiny_config), "--steps", "4",
            "--eval-every", "2", "--cameras", "front", "wrist", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    with (out / STUDY_CSV_NAME).open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["camera"], r["step"]) for r in rows] == [
        ("front", "2"),
        ("front", "4"),
        ("wrist", "2"),
        ("wrist", "4"),
    ]
    assert all(0.0 <= float(r["held_out_top1_pct"]) <= 100.0 and r["held_out_episodes"] == "1" for r in rows)
    assert (out / STUDY_PNG_NAME).stat().st_size > 0
    before = (out / STUDY_CSV_NAME).read_text()
    caplog.set_level("INFO")
    assert main(args) == 0  # both cameras are done: nothing retrains
    assert (out / STUDY_CSV_NAME).read_text() == before
    assert caplog.text.count("already in") == 2


def test_study_errors_are_clear(tmp_path: Path, tiny_config: Path, caplog) -> None:
    assert main(["--data", str(tmp_path / "none"), "--out", str(tmp_path), "--config", str(tiny_config)]) == 2
    assert "does not exist" in caplog.text
