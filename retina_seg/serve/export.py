"""Standalone exports of a run's network: SavedModel, TFLite or ONNX, plus `inference.json`.

The exported network runs without retina-seg or segmentation_models: it takes float32 RGB in
[0, 1], NHWC (height and width multiples of 32; TFLite and PSPNet: exactly one image_size window), and
returns sigmoid probabilities, one channel per class. Everything around it that retina-seg does
(preprocessing, sliding window or resize, flips, field of view, thresholds) is written to
`inference.json` next to it, so another runtime can reproduce `predict`.

A cross-validation parent's model is the ensemble of its folds: every fold's network is written
(`folds/fold<k>/<file>`, listed under `members` in place of `file`), and a runtime averages their
probabilities pixel by pixel before applying the thresholds, which were chosen for that average.
"""

from __future__ import annotations

import json
from pathlib import Path

import tensorflow as tf

from retina_seg.config import ExportFormat, Sampling
from retina_seg.errors import UserError
from retina_seg.model.precision import POLICIES, at_precision_model, resolve
from retina_seg.tracking.artifacts import fold_folder
from retina_seg.tracking.reload import LoggedModel

FILES = {ExportFormat.savedmodel: "savedmodel", ExportFormat.tflite: "model.tflite", ExportFormat.onnx: "model.onnx"}
INPUT_NAME = "image"


class ExportError(UserError):
    """An export that cannot be written; the message says why."""


def inference_spec(logged: LoggedModel, fmt: ExportFormat, source: str, precision: str = "32") -> dict:
    """Everything inference needs besides the network, as plain JSON."""
    config = logged.config
    window = config.image_size
    files = {"file": FILES[fmt]} if len(logged.models) == 1 else {
        "members": [str(member) for member in _members(Path(), fmt, len(logged.models))],  # relative
        "combine": "average the members' probabilities pixel by pixel (each member run as a single network "
                   "would be: same windows, blending and flips), then apply `thresholds`, chosen for that average"}
    return {
        "source": source, "format": fmt.value, **files,
        "input": {"name": INPUT_NAME, "layout": "NHWC", "dtype": "float32", "channel_order": "RGB",
                  "scale": "pixel / 255 (uint8 -> [0, 1]); any ImageNet normalisation is inside the network",
                  "shape": [1, window, window, 3] if fmt is ExportFormat.tflite else [None, *_sides(logged.model), 3],
                  "size_multiple": config.arch.size_multiple},
        "output": {"layout": "NHWC", "dtype": "float32", "activation": "sigmoid", "classes": config.data.channels},
        "precision": {"computes_in": POLICIES[precision], "weights": "float32",
                      "trained_with": f"trainer.precision={config.trainer.precision}",
                      "note": "exports compute in float32 unless `precision=` asks otherwise (SavedModel only); "
                              "the output layer is float32 under every policy"},
        "preprocessing": {"green_channel": config.preprocess.green_channel, "clahe": config.preprocess.clahe,
                          "clahe_clip_limit": config.preprocess.clahe_clip_limit, "clahe_tile_grid": [8, 8],
                          "clahe_space": "LAB lightness", "fov_threshold_red": config.preprocess.fov_threshold},
        "sampling": config.data.sampling.value,
        "window": window,
        "stride": (config.inference.stride or window // 2) if config.data.sampling is Sampling.patches else None,
        "blend": "gaussian, sigma = window / 4, reflect-padded image" if config.data.sampling is Sampling.patches
        else "whole image resized to window (area), probabilities resized back (linear)",
        "flip_tta": config.inference.flip_tta,
        "fov_mask": config.inference.fov_mask,
        "thresholds": logged.thresholds,
        "class_names": config.data.channels,
    }


def _members(output: Path, fmt: ExportFormat, count: int) -> list[Path]:
    """Where the networks go: `output/<file>`, or one `output/folds/fold<k>/<file>` per fold of an ensemble."""
    return [output / FILES[fmt]] if count == 1 else [fold_folder(output, k) / FILES[fmt] for k in range(count)]


def export_network(logged: LoggedModel, fmt: ExportFormat, output: Path, source: str, opset: int = 17,
                   precision: str = "32") -> list[Path]:
    """Write the network (every fold's, for an ensemble) in `fmt` at `precision` and `inference.json` into
    `output` (created; must be empty); returns the networks written."""
    if output.exists() and any(output.iterdir()):
        raise ExportError(f"output='{output}' is not empty: choose a new folder")
    targets = _members(output, fmt, len(logged.models))
    for member, target in zip(logged.models, targets, strict=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        _write(at_precision_model(member, resolve(precision)), fmt, target, logged.config.image_size, opset)
    (output / "inference.json").write_text(json.dumps(inference_spec(logged, fmt, source, precision), indent=2))
    return targets


def _write(model: tf.keras.Model, fmt: ExportFormat, target: Path, window: int, opset: int) -> None:
    if fmt is ExportFormat.savedmodel:
        model.export(str(target))  # an inference-only SavedModel with a `serve` endpoint
    elif fmt is ExportFormat.tflite:
        forward = tf.function(lambda image: model(image, training=False),
                              input_signature=[tf.TensorSpec([1, window, window, 3], tf.float32, INPUT_NAME)])
        converter = tf.lite.TFLiteConverter.from_concrete_functions([forward.get_concrete_function()], model)
        target.write_bytes(converter.convert())
    else:
        import tf2onnx  # optional: only this format needs it

        tf2onnx.convert.from_keras(model, input_signature=[tf.TensorSpec([None, *_sides(model), 3], tf.float32,
                                                                         INPUT_NAME)],
                                   opset=opset, output_path=str(target))


def _sides(model: tf.keras.Model) -> list:
    """The input height and width the network takes: [None, None] (any multiple of the size multiple), or the
    one size it was built for (PSPNet: image_size)."""
    return list(model.input_shape[1:3])
