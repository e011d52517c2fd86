"""Figures logged with every run, ready for a paper: training curves and test images with error maps.

Every figure is written twice by `save_figure`: a 200 dpi PNG and an SVG vector copy. Colours come
from the Okabe-Ito palette, which stays distinguishable with the common colour-vision deficiencies;
`ERROR_COLOURS` and `error_map` are the shared vocabulary of the error maps (true positive, false
positive, false negative), reusable by other figures.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from retina_seg.reporting.palette import OKABE_ITO  # noqa: E402
from retina_seg.tracking import artifacts  # noqa: E402

PALETTE = [tuple(v / 255 for v in rgb) for rgb in OKABE_ITO.values()]  # matplotlib colour cycle, 0-1 floats
ERROR_COLOURS = {"true positive": OKABE_ITO["bluish_green"], "false positive": OKABE_ITO["vermillion"],
                 "false negative": OKABE_ITO["sky_blue"]}
DPI = 200
CURVES = {"loss": "loss", "iou_score": "IoU", "f1-score": "F-score (Dice)"}

plt.rcParams["axes.prop_cycle"] = plt.cycler(color=PALETTE)
plt.rcParams["svg.fonttype"] = "none"  # text stays text in the SVG copy: editable, searchable


def save_figure(fig: plt.Figure, path: Path) -> None:
    """`path` as a 200 dpi PNG plus the same figure as `path` with suffix .svg; closes the figure."""
    fig.savefig(path.with_suffix(".png"), dpi=DPI, bbox_inches="tight")
    fig.savefig(path.with_suffix(".svg"), bbox_inches="tight")
    plt.close(fig)


def epoch_axis(ax: plt.Axes) -> None:
    """Epochs are counted from 1 and only whole epochs are ticked."""
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_history(history: pd.DataFrame, path: Path) -> None:
    """Train and validation curves of loss, IoU and F-score against epoch."""
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.4))
    for ax, (key, label) in zip(axes, CURVES.items(), strict=True):
        for prefix, split, style in (("", "training", "-"), ("val_", "validation", "--")):
            if prefix + key in history:
                ax.plot(history["epoch"] + 1, history[prefix + key], style, marker="o", markersize=3, label=split)
        epoch_axis(ax)
        ax.set_ylabel(f"{label} (per pixel, 0-1)" if key != "loss" else "loss (weighted sum)")
        ax.set_title(f"{label} per epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    save_figure(fig, path)


def colorize(masks: np.ndarray) -> np.ndarray:
    """(H, W, C) masks or probabilities -> RGB float image, one palette colour per channel (white if C == 1)."""
    if masks.shape[-1] == 1:
        return np.repeat(masks, 3, axis=-1)
    colours = np.array(PALETTE[: masks.shape[-1]])
    return np.clip(masks @ colours, 0, 1)


def overlay(image: np.ndarray, masks: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """uint8 RGB image with (H, W, C) binary masks painted over it in their channel colours, at the
    image's own resolution."""
    colours = colorize(masks.astype(np.float32))
    painted = masks.any(axis=-1)[..., None]
    blended = np.where(painted, (1 - alpha) * image / 255.0 + alpha * colours, image / 255.0)
    return (np.clip(blended, 0, 1) * 255).astype(np.uint8)


def error_map(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray, fov: np.ndarray | None = None,
              alpha: float = 0.75) -> np.ndarray:
    """uint8 RGB image (H, W, 3) with true positives, false positives and false negatives of the binary
    (H, W) `prediction` against `truth` painted in ERROR_COLOURS; pixels outside `fov` stay unpainted."""
    inside = np.ones(truth.shape, bool) if fov is None else fov.astype(bool)
    truth, prediction = truth.astype(bool) & inside, prediction.astype(bool) & inside
    result = image.astype(np.float32)
    for kind, where in (("true positive", truth & prediction), ("false positive", prediction & ~truth),
                        ("false negative", truth & ~prediction)):
        result[where] = (1 - alpha) * result[where] + alpha * np.array(ERROR_COLOURS[kind], np.float32)
    return np.clip(result, 0, 255).astype(np.uint8)


def error_legend() -> list[Patch]:
    return [Patch(color=np.array(rgb) / 255, label=kind) for kind, rgb in ERROR_COLOURS.items()]


def plot_examples(images: list, truths: list, probs: list, fovs: list, names: list[str], thresholds: list[float],
                  f1: dict[str, float], path: Path, count: int = 3) -> None:
    """Rows of image | prediction over the image | error map for the first `count` test images, with the
    image's F1 in the title; each error map is also written at the image's full resolution as
    `examples/<name>_errors.png` beside the figure. Channels are merged (any channel) for multi-label models."""
    count = min(count, len(images))
    (path.parent / artifacts.EXAMPLES).mkdir(exist_ok=True)
    fig, axes = plt.subplots(count, 3, figsize=(12, 4 * count), squeeze=False)
    for row in range(count):
        predicted = probs[row] >= np.asarray(thresholds)
        truth = truths[row] > 0
        panels = (images[row], overlay(images[row], predicted),
                  error_map(images[row], truth.any(-1), predicted.any(-1), fovs[row]))
        plt.imsave(path.parent / artifacts.EXAMPLES / f"{names[row]}_errors.png", panels[2])
        titles = ("image", "prediction over the image", f"errors, F1 {f1[names[row]]:.3f}")
        for ax, panel, title in zip(axes[row], panels, titles, strict=True):
            ax.imshow(panel, interpolation="none")
            ax.set_title(f"{names[row]}: {title}", fontsize=10)
            ax.axis("off")
    fig.legend(handles=error_legend(), loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    save_figure(fig, path)
