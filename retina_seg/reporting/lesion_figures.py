"""Lesion overlays: ground truth beside prediction, one colour per lesion type (palette.py, as the served
viewer paints them), on the whole photograph and on a zoomed crop where lesions are densest (microaneurysms
are a few pixels: only the crop shows them)."""

from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from retina_seg.reporting.palette import class_colours  # noqa: E402


def paint(image: np.ndarray, masks: np.ndarray, channels: list[str], alpha: float = 0.8) -> np.ndarray:
    """uint8 RGB image with each channel's pixels blended towards its class colour (later channels on top)."""
    out = image.astype(np.float32)
    for c, colour in enumerate(class_colours(channels).values()):
        where = masks[..., c] > 0
        out[where] = (1 - alpha) * out[where] + alpha * np.array(colour, np.float32)
    return out.astype(np.uint8)


def densest_crop(masks: np.ndarray, side: int) -> tuple:
    """(top, left, side) of the side x side window holding the most lesion pixels (any channel)."""
    height, width = masks.shape[:2]
    side = min(side, height, width)
    union = masks.any(axis=-1).astype(np.float32)
    density = cv2.boxFilter(union, -1, (side, side), normalize=False, borderType=cv2.BORDER_CONSTANT)
    # the box is centred on each pixel; keep centres whose window lies inside the image
    half = side // 2
    inside = density[half: height - side + half + 1, half: width - side + half + 1]
    top, left = np.unravel_index(int(np.argmax(inside)), inside.shape)
    return int(top), int(left), side


def plot_lesions(image: np.ndarray, truth: np.ndarray, prob: np.ndarray, channels: list[str],
                 thresholds: dict[str, float], title: str, path: Path, crop: int = 512) -> None:
    """A 2 x 2 figure: ground truth | prediction (at the validation thresholds), full image above,
    the densest crop (outlined above) below, with a colour legend."""
    predicted = np.stack([prob[..., c] >= thresholds[name] for c, name in enumerate(channels)], axis=-1)
    top, left, side = densest_crop(truth, crop)
    window = (slice(top, top + side), slice(left, left + side))
    panels = [(paint(image, truth, channels), "ground truth"), (paint(image, predicted, channels), "prediction")]
    fig, axes = plt.subplots(2, 2, figsize=(12, 11))
    for column, (painted, label) in enumerate(panels):
        axes[0, column].imshow(painted)
        axes[0, column].add_patch(Rectangle((left, top), side, side, fill=False, edgecolor="white", linewidth=1.2))
        axes[0, column].set_title(f"{title}: {label}")
        axes[1, column].imshow(painted[window], interpolation="nearest")
        axes[1, column].set_title(f"{label}, {side}x{side} px crop at ({left}, {top})")
    for ax in axes.flat:
        ax.set_axis_off()
    handles = [Patch(color=np.array(rgb) / 255, label=c) for c, rgb in class_colours(channels).items()]
    fig.legend(handles=handles, loc="lower center", ncol=len(channels), frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
