"""Figures of a test result for the report: pooled ROC and PR curves, and error maps of the best and worst images.

Error maps colour every field-of-view pixel the model got wrong or right in three Okabe-Ito colours
that stay distinct with the common colour-vision deficiencies (figures.ERROR_COLOURS): true positive bluish
green, false positive vermillion, false negative sky blue, over the dimmed grey image (lesion models: all
channels merged).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from retina_seg.data.loading import Arrays  # noqa: E402
from retina_seg.reporting.figures import error_legend, error_map, save_figure  # noqa: E402

MAX_CURVE_PIXELS = 2_000_000  # pooled FOV pixels drawn per curve (a seeded sample beyond that)


def _pooled(probs: list, arrays: Arrays, channel: int) -> tuple[np.ndarray, np.ndarray]:
    truth = np.concatenate([m[..., channel][f] > 0 for m, f in zip(arrays.masks, arrays.fov, strict=True)])
    prob = np.concatenate([p[..., channel][f] for p, f in zip(probs, arrays.fov, strict=True)])
    if len(truth) > MAX_CURVE_PIXELS:
        keep = np.random.default_rng(0).choice(len(truth), MAX_CURVE_PIXELS, replace=False)
        truth, prob = truth[keep], prob[keep]
    return truth, prob


def plot_roc_pr(probs: list, arrays: Arrays, channels: list[str], path: Path,
                observer: pd.DataFrame | None = None) -> None:
    """ROC and precision-recall curves over all test FOV pixels pooled, one line per channel; the second
    human observer (mean over images) as a point where there is one."""
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(9, 4))
    for c, name in enumerate(channels):
        truth, prob = _pooled(probs, arrays, c)
        if truth.all() or not truth.any():
            continue
        fpr, tpr, _ = roc_curve(truth, prob)
        precision, recall, _ = precision_recall_curve(truth, prob)
        roc.plot(fpr, tpr, label=name)
        pr.plot(recall, precision, label=name)
    if observer is not None and len(observer):
        sensitivity, specificity = observer["sensitivity"].mean(), observer["specificity"].mean()
        precision = observer["precision"].mean()
        roc.plot(1 - specificity, sensitivity, "k^", label="2nd observer")
        pr.plot(sensitivity, precision, "k^", label="2nd observer")
    roc.plot([0, 1], [0, 1], ":", color="grey")
    roc.set(title="ROC (test, pooled FOV pixels)", xlabel="false positive rate", ylabel="true positive rate")
    pr.set(title="Precision-recall (test, pooled FOV pixels)", xlabel="recall", ylabel="precision")
    for ax in (roc, pr):
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_lesion_pr(probs: list, arrays: Arrays, channels: list[str], aupr: dict[str, float], path: Path) -> None:
    """Precision-recall curve per lesion type over the pooled field-of-view pixels of the test images that
    have that lesion (the IDRiD challenge's protocol), each lesion's pooled AUPR (`aupr`, by channel) in the
    legend: what a grader compares with the published figures."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for c, name in enumerate(channels):
        having = [i for i, (m, f) in enumerate(zip(arrays.masks, arrays.fov, strict=True)) if m[..., c][f].any()]
        if not having:
            continue
        truth, prob = _pooled([probs[i] for i in having], arrays.take(having), c)
        precision, recall, _ = precision_recall_curve(truth, prob)
        ax.plot(recall, precision, label=f"{name}  AUPR {aupr[name]:.3f} ({len(having)} images)")
    ax.set(title="Precision-recall per lesion (test, pooled pixels)", xlabel="recall", ylabel="precision",
           xlim=(0, 1), ylim=(0, 1.01))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_best_worst(probs: list, arrays: Arrays, per_image: pd.DataFrame, thresholds: dict, path: Path,
                    count: int = 3) -> list[str]:
    """Error maps of the `count` worst and `count` best test images by F1 (fewer when the test split is
    small); returns the names shown, worst first."""
    f1 = per_image.groupby("image", sort=False)["f1"].mean()
    ranked = [arrays.names.index(name) for name in f1.sort_values(na_position="first").index]
    k = max(1, min(count, len(ranked) // 2))
    shown = [("worst", i) for i in ranked[:k]] + [("best", i) for i in ranked[::-1][:k]]
    cutoffs = np.array(list(thresholds.values()))
    fig, axes = plt.subplots(2, k, figsize=(4 * k, 8.6), squeeze=False)
    for ax, (label, i) in zip(axes.flat, shown, strict=True):
        truth = arrays.masks[i].astype(bool).any(axis=-1)
        predicted = (probs[i] >= cutoffs).any(axis=-1)
        ax.imshow(error_map(arrays.images[i], truth, predicted, arrays.fov[i]))
        ax.set_title(f"{label}: {arrays.names[i]}  F1 {f1[arrays.names[i]]:.3f}", fontsize=9)
        ax.axis("off")
    fig.legend(handles=error_legend(),
               loc="lower center", ncol=3, fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [arrays.names[i] for _, i in shown]


def plot_heatmap(matrix: pd.DataFrame, title: str, path: Path) -> None:
    """A metric matrix (rows trained on, columns tested on) as an annotated heatmap in [0, 1] (viridis)."""
    fig, ax = plt.subplots(figsize=(1.6 * matrix.shape[1] + 3, 0.7 * matrix.shape[0] + 2))
    image = ax.imshow(matrix.to_numpy(dtype=float), cmap="viridis", vmin=0, vmax=1)
    for (row, column), value in np.ndenumerate(matrix.to_numpy(dtype=float)):
        if np.isfinite(value):
            ax.text(column, row, f"{value:.3f}", ha="center", va="center", color="white" if value < 0.6 else "black")
    ax.set_xticks(range(matrix.shape[1]), matrix.columns)
    ax.set_yticks(range(matrix.shape[0]), matrix.index)
    ax.set(xlabel="tested on", ylabel="trained on", title=title)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
