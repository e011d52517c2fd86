"""One factory for every segmentation_models architecture and backbone the config can name."""

from __future__ import annotations

import re

import numpy as np
import segmentation_models as sm
import tensorflow as tf

from retina_seg.config import ArchConfig, ConfigError, Normalization
from retina_seg.model.precision import Resolved, at_precision_model

ARCHITECTURES = {"unet": sm.Unet, "fpn": sm.FPN, "linknet": sm.Linknet, "pspnet": sm.PSPNet}


def build_model(backbone: str, arch: ArchConfig, classes: int, image_size: int, encoder_weights: str | None,
                batchnorm_momentum: float | None = None, normalization: Normalization = Normalization.unit,
                precision: Resolved | None = None) -> tf.keras.Model:
    """A model mapping float32 images (B, H, W, 3) in [0, 1] to float32 sigmoid probabilities (B, H, W, classes),
    computing at `precision` (default float32; see model/precision.py).

    Multi-label on purpose: vessels are one channel, lesion types are independent channels.
    H and W may be any multiple of 32 except for PSPNet, which is built for image_size only.
    With `normalization: backbone` the encoder's own preprocessing is the model's first layer, so a
    reloaded model takes the same [0, 1] input whatever the backbone.
    """
    valid = sm.Backbones.models_names()
    if backbone not in valid:
        raise ConfigError(f"backbone.name={backbone!r} is not a segmentation_models backbone: "
                          f"expected one of {', '.join(sorted(valid))}")
    side = image_size if arch.name.value == "pspnet" else None
    try:
        model = ARCHITECTURES[arch.name.value](
            backbone_name=backbone, input_shape=(side, side, 3), classes=classes, activation="sigmoid",
            encoder_weights=encoder_weights, **arch.options)
    except Exception as exc:
        if encoder_weights == "imagenet" and _is_download_failure(exc):
            raise ConfigError(_offline_weights_message(backbone, exc)) from exc
        if isinstance(exc, (TypeError, ValueError)):
            raise ConfigError(f"arch={arch.name.value} backbone={backbone}: {exc}") from exc
        raise
    if batchnorm_momentum is not None:
        for layer in model.layers:
            if isinstance(layer, tf.keras.layers.BatchNormalization):
                layer.momentum = batchnorm_momentum
    if normalization is Normalization.backbone:
        model = _with_input_normalization(model, backbone, side)
    return model if precision is None else at_precision_model(model, precision)


def _with_input_normalization(model: tf.keras.Model, backbone: str, side: int | None) -> tf.keras.Model:
    """Prepend the backbone's preprocessing as a frozen 1x1 convolution: every sm/Keras preprocess_input
    is affine per pixel (scale, mean/std, RGB->BGR), so probing it with unit colours recovers it exactly
    and it serialises to JSON + H5 like any other layer."""
    preprocess = sm.get_preprocessing(backbone)
    probes = np.concatenate([np.zeros((1, 3)), np.eye(3)]).reshape(4, 1, 1, 3) * 255.0
    response = np.asarray(preprocess(probes.copy()), dtype=np.float64).reshape(4, 3)
    bias = response[0]
    kernel = (response[1:] - bias).reshape(1, 1, 3, 3)
    layer = tf.keras.layers.Conv2D(3, 1, name="backbone_preprocessing", trainable=False)
    inputs = tf.keras.Input((side, side, 3))
    outputs = model(layer(inputs))
    layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return tf.keras.Model(inputs, outputs, name=f"{model.name}_{backbone}_preprocessed")


def _is_download_failure(exc: BaseException) -> bool:
    return "fetch failure" in str(exc) or isinstance(exc, OSError)


def _offline_weights_message(backbone: str, exc: BaseException) -> str:
    url = re.search(r"https?://[^\s:]+(?::\d+)?[^\s:]*", str(exc))
    where = f"download {url.group(0)} on a machine with network access and place it" if url else "place the file"
    return (f"encoder_weights=imagenet: the {backbone} ImageNet weights could not be downloaded (offline?); "
            f"{where} in ~/.keras/models/, or use encoder_weights=null")
