"""Figures logged with every run: training curves and test images side by side."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

CURVES = ("loss", "iou_score", "f1-score")


def plot_history(history: pd.DataFrame, path: Path) -> None:
    """Train and validation curves of loss, IoU and F-score against epoch."""
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    for ax, key in zip(axes, CURVES, strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key in history:
                ax.plot(history["epoch"] + 1, history[prefix + key], style, marker="o", label=prefix + key)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def colorize(masks: np.ndarray) -> np.ndarray:
    """(H, W, C) masks or probabilities -> RGB float image, one tab10 colour per channel (white if C == 1)."""
    if masks.shape[-1] == 1:
        return np.repeat(masks, 3, axis=-1)
    colours = np.array(plt.get_cmap("tab10").colors[: masks.shape[-1]])
    return np.clip(masks @ colours, 0, 1)


def overlay(image: np.ndarray, masks: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """uint8 RGB image with (H, W, C) binary masks painted over it in their channel colours."""
    colours = colorize(masks.astype(np.float32))
    painted = masks.any(axis=-1)[..., None]
    blended = np.where(painted, (1 - alpha) * image / 255.0 + alpha * colours, image / 255.0)
    return (np.clip(blended, 0, 1) * 255).astype(np.uint8)


def plot_examples(images: np.ndarray, truths: np.ndarray, probs: np.ndarray, names: list[str], path: Path,
                  count: int = 3) -> None:
    """Rows of image | ground truth | predicted probability for the first `count` test images."""
    count = min(count, len(images))
    fig, axes = plt.subplots(count, 3, figsize=(9, 3 * count), squeeze=False)
    for row in range(count):
        panels = (images[row], colorize(truths[row].astype(np.float32)), colorize(probs[row]))
        for ax, panel, title in zip(axes[row], panels, ("image", "ground truth", "prediction"), strict=True):
            ax.imshow(panel)
            ax.set_title(f"{names[row]}: {title}", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
