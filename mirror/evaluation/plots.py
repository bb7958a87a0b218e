"""Evaluation figures (matplotlib, Agg backend, PNG): per-task success with error bars, per-task recognition
with the chance line, each model's recognition confusion matrix as a heatmap, and the aligned space
``T_u u`` / ``T_e e`` in 2-D (t-SNE, as the paper's Fig. 6)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from mirror.evaluation.alignment_metrics import AlignmentPairs  # noqa: E402
from mirror.evaluation.recognition import ConfusionMatrix  # noqa: E402
from mirror.evaluation.reporting import confusion_file  # noqa: E402


def save_figure(fig, path: Path) -> Path:
    """Lay out, write as PNG (120 dpi) and close ``fig``; returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


log = logging.getLogger(__name__)

SUCCESS_PLOT = "success.png"
RECOGNITION_PLOT = "recognition.png"
TSNE_PLOT = "tsne.png"
MIN_TSNE_POINTS = 6  # below this t-SNE's neighbourhoods are meaningless; PCA is used instead
MAX_COLOURED_LABELS = 20  # tab20; with more instructions, points are coloured by task
MAX_ANNOTATED_CELLS = 30  # confusion labels beyond which the counts are no longer written in the cells


def _grouped_bars(
    ax, groups: list[str], series: Mapping[str, list[float]], errors: Mapping[str, list[float]] | None = None
) -> None:
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        err = None if errors is None else errors[name]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, yerr=err, capsize=3, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0, 105)
    ax.grid(axis="y", alpha=0.3)


def plot_success(executions: Mapping[str, Mapping], path: Path) -> Path:
    """Per-task success rate (%) of each model, error bars = std over evaluation seeds, plus the average."""
    tasks = sorted({t for e in executions.values() for t in e["per_task"]})
    groups = [*tasks, "average"]

    def stat(e: Mapping, task: str, key: str) -> float:
        entry = e["overall"] if task == "average" else e["per_task"].get(task)
        return 100.0 * entry[key] if entry is not None else np.nan

    means = {n: [stat(e, t, "success_mean") for t in groups] for n, e in executions.items()}
    stds = {n: [stat(e, t, "success_std") for t in groups] for n, e in executions.items()}
    seeds = max(len(e["eval_seeds"]) for e in executions.values())
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) + 2), 4.5))
    _grouped_bars(ax, groups, means, stds)
    ax.set_ylabel("success rate (%)")
    ax.set_title(f"Success per task (mean ± std over {seeds} seed(s))")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_recognition(recognitions: Mapping[str, Mapping], path: Path) -> Path:
    """Per-task top-1 instruction recognition (%) of each model, with each model's chance level."""
    tasks = sorted({t for r in recognitions.values() for t in r["per_task"]})
    groups = [*tasks, "all"]

    def top1(r: Mapping, task: str) -> float:
        entry = r["overall"] if task == "all" else r["per_task"].get(task)
        return 100.0 * entry["top1"] if entry is not None else np.nan

    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) + 2), 4.5))
    _grouped_bars(ax, groups, {n: [top1(r, t) for t in groups] for n, r in recognitions.items()})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, r) in enumerate(recognitions.items()):
        ax.axhline(
            100.0 * r["chance_top1"],
            color=colours[i % len(colours)],
            linestyle="--",
            linewidth=1.2,
            zorder=3,
            label=f"chance {name} (1/{r['vocabulary_size']})",
        )
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Action understanding: top-1 recognition among all instructions")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def confusion_plot_name(model: str) -> str:
    """``confusion_<model>.png``, beside the CSV of the same stem."""
    return confusion_file(model, "png")


def plot_confusion(confusion: ConfusionMatrix | Mapping, path: Path, model: str) -> Path:
    """Heatmap of one model's top-1 confusion matrix (rows = true, columns = recognised instruction):
    colour = share of the true instruction's videos, so rare instructions read as clearly as common ones;
    cells hold the counts, and each row label its accuracy."""
    if not isinstance(confusion, ConfusionMatrix):
        confusion = ConfusionMatrix.from_dict(confusion)
    counts = confusion.counts
    n = len(confusion.labels)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    size = max(4.5, 0.55 * n + 3.0)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true instruction's videos")
    if n <= MAX_ANNOTATED_CELLS:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    colour = "white" if shares[i, j] > 0.5 else "black"
                    ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=8, color=colour)
    short = [label if len(label) <= 40 else label[:39] + "…" for label in confusion.labels]
    rows = [f"{s} ({int(counts[i, i])}/{int(totals[i, 0])})" for i, s in enumerate(short)]
    ax.set_xticks(np.arange(n))
    ax.set_xticklabels(short, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(np.arange(n))
    ax.set_yticklabels(rows, fontsize=7)
    ax.set_xlabel("recognised instruction")
    ax.set_ylabel("true instruction (correct/videos)")
    correct, videos = int(np.trace(counts)), int(counts.sum())
    ax.set_title(f"{model}: recognition confusion, top-1 {correct}/{videos}", fontsize=9)
    return save_figure(fig, path)


def _pca_2d(points: np.ndarray) -> np.ndarray:
    centred = points - points.mean(axis=0, keepdims=True)
    if centred.shape[0] < 2:
        return np.zeros((centred.shape[0], 2))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ vt[:2].T
    return np.pad(projected, ((0, 0), (0, 2 - projected.shape[1])))


def embed_2d(points: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates and the method's name: t-SNE (scikit-learn), or PCA when scikit-learn is missing or
    there are too few points (the name says which and why)."""
    if points.shape[0] < MIN_TSNE_POINTS:
        return _pca_2d(points), f"PCA (only {points.shape[0]} points, too few for t-SNE)"
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        log.warning("scikit-learn is not installed: the aligned-space plot uses PCA instead of t-SNE")
        return _pca_2d(points), "PCA (scikit-learn missing, no t-SNE)"
    perplexity = float(min(30.0, max(2.0, (points.shape[0] - 1) / 3.0)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(points.astype(np.float64)), f"t-SNE (perplexity {perplexity:.0f})"


def _points_of(pairs: AlignmentPairs) -> tuple[np.ndarray, list[str], list[str], list[str]]:
    """Unique clip embeddings (one per episode) then every keyframe embedding, with labels and modality."""
    seen: dict[tuple[str, int], int] = {}
    for i, key in enumerate(zip(pairs.tasks, pairs.episodes)):
        seen.setdefault(key, i)
    clips = list(seen.values())
    points = np.concatenate([pairs.z_u[clips], pairs.z_e])
    instructions = [pairs.instructions[i] for i in clips] + list(pairs.instructions)
    tasks = [pairs.tasks[i] for i in clips] + list(pairs.tasks)
    modality = ["observe"] * len(clips) + ["execute"] * len(pairs)
    return points, instructions, tasks, modality


def plot_aligned_space(
    pairs_by_model: Mapping[str, AlignmentPairs], path: Path, seed: int = 0, max_points: int = 2000
) -> tuple[Path, dict]:
    """One panel per model: ``T_u u`` (circles, observing) and ``T_e e`` (triangles, executing), coloured by
    instruction (by task when there are more than 20 instructions); at most ``max_points`` points per panel
    (a seeded random subset: t-SNE is quadratic). Returns the path and the method used per model."""
    names = list(pairs_by_model)
    fig, axes = plt.subplots(1, len(names), figsize=(6.0 * len(names), 5.5), squeeze=False)
    methods = {}
    for ax, name in zip(axes[0], names):
        points, instructions, tasks, modality = _points_of(pairs_by_model[name])
        if len(points) > max_points:
            keep = np.sort(np.random.default_rng(seed).choice(len(points), max_points, replace=False))
            points = points[keep]
            instructions, tasks, modality = ([x[i] for i in keep] for x in (instructions, tasks, modality))
        coords, method = embed_2d(points, seed)
        methods[name] = method
        by_instruction = len(set(instructions)) <= MAX_COLOURED_LABELS
        labels = instructions if by_instruction else tasks
        palette = plt.get_cmap("tab20")
        order = sorted(set(labels))
        colour = {label: palette(i % 20) for i, label in enumerate(order)}
        for kind, marker in (("observe", "o"), ("execute", "^")):
            chosen = [i for i, m in enumerate(modality) if m == kind]
            ax.scatter(
                coords[chosen, 0], coords[chosen, 1], c=[colour[labels[i]] for i in chosen], marker=marker,
                s=36 if kind == "observe" else 22, edgecolors="black" if kind == "observe" else "none",
                linewidths=0.4, alpha=0.85,
            )  # fmt: skip
        handles = [
            plt.Line2D(
                [],
                [],
                marker="o",
                linestyle="",
                color="gray",
                markeredgecolor="black",
                label="T_u u (observe)",
            ),
            plt.Line2D([], [], marker="^", linestyle="", color="gray", label="T_e e (execute)"),
            *[plt.Line2D([], [], marker="s", linestyle="", color=colour[lb], label=lb[:40]) for lb in order],
        ]
        ax.legend(handles=handles, fontsize=6, loc="best")
        colouring = "instruction" if by_instruction else "task"
        ax.set_title(f"{name}: aligned space, {method}\ncoloured by {colouring}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, path), methods
