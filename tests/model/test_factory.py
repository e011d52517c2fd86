"""Every configured backbone and architecture builds and maps images to per-pixel probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from retina_seg.config import CONF_DIR, ConfigError, validate
from retina_seg.model.factory import build_model
from retina_seg.model.known_layers import unknown_objects
from retina_seg.model.losses import build_loss
from retina_seg.model.precision import at_precision
from tests.conftest import compose_config

BACKBONES = sorted(p.stem for p in (CONF_DIR / "backbone").glob("*.yaml"))
ARCHS = sorted(p.stem for p in (CONF_DIR / "arch").glob("*.yaml"))


def build(overrides, classes=1):
    config = validate(compose_config(overrides))
    return config, build_model(config.backbone.name, config.arch, classes, config.image_size,
                               config.encoder_weights, config.batchnorm_momentum, config.preprocess.normalization)


@pytest.fixture(autouse=True)
def fresh_session():
    yield
    tf.keras.backend.clear_session()


def assert_json_is_known(model):
    """What the model's JSON holds, float32 and mixed, is on the allow-list of JSON that reloads untrusted. Every
    backbone is built with the U-Net and every architecture with one backbone: an encoder's layers are the same
    under every decoder, so the two cover the whole cross product (checked once: 505 s for 96 builds)."""
    text = model.to_json()
    for architecture in (text, at_precision(text, "bf16-mixed"), at_precision(text, "16-mixed")):
        assert unknown_objects(json.loads(architecture)) == []


@pytest.mark.parametrize("backbone", [b if b == "resnet18" else pytest.param(b, marks=pytest.mark.slow)
                                      for b in BACKBONES])  # make test-fast: the recipes' encoder only
def test_every_backbone_builds_a_unet(backbone):
    _, model = build([f"backbone={backbone}", "image_size=64"])
    out = model.predict(np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32), verbose=0)
    assert out.shape == (1, 64, 64, 1)
    # per-pixel probabilities: the output is a sigmoid, so the losses and thresholds read it as one
    assert model.layers[-1].get_config()["activation"] == "sigmoid" and model.layers[-1].dtype_policy.name == "float32"
    assert_json_is_known(model)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_builds_with_three_lesion_channels(arch):
    config, model = build([f"arch={arch}", "backbone=resnet18", "image_size=96"], classes=3)
    assert model.output_shape[-1] == 3
    out = model.predict(np.zeros((1, 96, 96, 3), np.float32), verbose=0)
    assert out.shape == (1, 96, 96, 3)
    assert_json_is_known(model)


def test_batchnorm_momentum_comes_from_config():
    _, model = build(["backbone=resnet18", "image_size=64", "batchnorm_momentum=0.8"])
    momenta = {layer.momentum for layer in model.layers if isinstance(layer, tf.keras.layers.BatchNormalization)}
    assert momenta == {0.8}


def test_unknown_backbone_name_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"'resnet35' is not a segmentation_models backbone: .*resnet34"):
        build(["backbone.name=resnet35", "image_size=64"])


def test_loss_is_the_weighted_sum_of_terms():
    config = validate(compose_config(["loss.dice=0.5", "loss.focal=2", "loss.bce=1"]))
    loss = build_loss(config.loss)
    y_true = tf.constant(np.random.default_rng(1).integers(0, 2, (2, 8, 8, 1)), tf.float32)
    y_pred = tf.constant(np.random.default_rng(2).random((2, 8, 8, 1)), tf.float32)
    from segmentation_models import losses as sm_losses
    expected = (0.5 * sm_losses.DiceLoss()(y_true, y_pred) + 2 * sm_losses.BinaryFocalLoss()(y_true, y_pred)
                + sm_losses.BinaryCELoss()(y_true, y_pred))
    assert float(loss(y_true, y_pred)) == pytest.approx(float(expected), rel=1e-5)


def test_per_channel_weights_weigh_lesion_pixels_in_bce_and_channels_in_dice():
    config = validate(compose_config(["data.task=lesions", "data.lesion_types=[MA,EX]", "loss=bce_dice",
                                      "loss.positive_weights=[10,1]", "loss.class_weights=[2,1]"]))
    rng = np.random.default_rng(4)
    truth = (rng.random((2, 8, 8, 2)) < 0.2).astype(np.float32)
    prob = rng.uniform(0.05, 0.95, (2, 8, 8, 2)).astype(np.float32)
    class_w, positive_w = np.array([2.0, 1.0]), np.array([10.0, 1.0])
    bce = np.mean(-(positive_w * truth * np.log(prob) + (1 - truth) * np.log(1 - prob)) * class_w)
    tp, fp, fn = ((truth * prob).sum((0, 1, 2)), ((1 - truth) * prob).sum((0, 1, 2)),
                  (truth * (1 - prob)).sum((0, 1, 2)))
    dice = 1 - np.mean(2 * tp / (2 * tp + fp + fn) * class_w)
    got = float(build_loss(config.loss)(tf.constant(truth), tf.constant(prob)))
    assert got == pytest.approx(bce + dice, rel=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["efficientnetb0", "vgg16", "densenet121", "mobilenetv2"])
def test_backbone_normalization_is_the_encoders_own_preprocessing_inside_the_model(backbone):
    from segmentation_models import get_preprocessing

    _, model = build([f"backbone={backbone}", "image_size=64", "preprocess.normalization=backbone"])
    images = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    layer = model.get_layer("backbone_preprocessing")
    expected = get_preprocessing(backbone)(images.astype(np.float64) * 255.0)
    np.testing.assert_allclose(layer(images).numpy(), expected, rtol=1e-4, atol=1e-3)
    rebuilt = tf.keras.models.model_from_json(model.to_json())
    rebuilt.set_weights(model.get_weights())
    x = np.random.default_rng(1).random((1, 64, 64, 3), dtype=np.float32)
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert_json_is_known(model)
