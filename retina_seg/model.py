"""One factory for every segmentation_models architecture and backbone the config can name."""

from __future__ import annotations

import re

import segmentation_models as sm
import tensorflow as tf

from retina_seg.config import ArchConfig, ConfigError

ARCHITECTURES = {"unet": sm.Unet, "fpn": sm.FPN, "linknet": sm.Linknet, "pspnet": sm.PSPNet}


def build_model(backbone: str, arch: ArchConfig, classes: int, image_size: int,
                encoder_weights: str | None, batchnorm_momentum: float | None = None) -> tf.keras.Model:
    """A model mapping float32 images (B, H, W, 3) in [0, 1] to sigmoid probabilities (B, H, W, classes).

    Multi-label on purpose: vessels are one channel, lesion types are independent channels.
    H and W may be any multiple of 32 except for PSPNet, which is built for image_size only.
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
    return model


def _is_download_failure(exc: BaseException) -> bool:
    return "fetch failure" in str(exc) or isinstance(exc, OSError)


def _offline_weights_message(backbone: str, exc: BaseException) -> str:
    url = re.search(r"https?://[^\s:]+(?::\d+)?[^\s:]*", str(exc))
    where = f"download {url.group(0)} on a machine with network access and place it" if url else "place the file"
    return (f"encoder_weights=imagenet: the {backbone} ImageNet weights could not be downloaded (offline?); "
            f"{where} in ~/.keras/models/, or use encoder_weights=null")
