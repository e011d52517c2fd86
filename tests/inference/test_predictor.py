"""Full-resolution inference: sliding windows tile, blend and crop exactly; resize models scale back."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from retina_seg.config import Arch, ArchConfig, InferenceConfig, InferenceMode, Sampling
from retina_seg.inference.predictor import Predictor, activation_bytes_per_pixel, gaussian_window
from retina_seg.model.factory import build_model

TILES = InferenceMode.tiles


def pointwise_model(seed: int = 0, channels: int = 2) -> tf.keras.Model:
    """A real Keras model whose output at a pixel depends only on that pixel (1x1 convolution), so a
    correct sliding window must reproduce the whole-image prediction exactly, wherever the windows fall."""
    inputs = tf.keras.Input((None, None, 3))
    layer = tf.keras.layers.Conv2D(channels, 1, activation="sigmoid")
    model = tf.keras.Model(inputs, layer(inputs))
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(0, 2, (1, 1, 3, channels)).astype(np.float32),
                      rng.normal(0, 1, channels).astype(np.float32)])
    return model


def whole(model, image):
    return model.predict(image[None].astype(np.float32) / 255.0, verbose=0)[0]


@pytest.mark.parametrize(("shape", "stride", "tta"), [((100, 130), None, False), ((64, 64), 16, True),
                                                      ((20, 12), None, False), ((200, 70), 64, False)])
def test_sliding_window_matches_whole_image_prediction(shape, stride, tta):
    model = pointwise_model()
    image = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    predictor = Predictor(model, 64, Sampling.patches, InferenceConfig(stride=stride, flip_tta=tta, batch_size=3,
                                                                                      mode=TILES))
    prob = predictor(image)
    assert prob.shape == (*shape, 2)
    np.testing.assert_allclose(prob, whole(model, image), atol=1e-5)


def test_windows_overlap_by_half_by_default_and_blend_with_centre_weight():
    predictor = Predictor(pointwise_model(), 64, Sampling.patches, InferenceConfig(mode=TILES))
    assert predictor.stride == 32
    weight = gaussian_window(64)
    assert weight[32, 32] > 0.99 and 0.01 < weight[0, 0] < weight[0, 32] < weight[32, 32]


def test_hrf_sized_image_is_predicted_window_by_window():
    model = pointwise_model()
    image = np.random.default_rng(2).integers(0, 256, (2336, 3504, 3), dtype=np.uint8)
    prob = Predictor(model, 256, Sampling.patches, InferenceConfig(stride=256, batch_size=8, mode=TILES))(image)
    assert prob.shape == (2336, 3504, 2) and prob.dtype == np.float32
    corner = image[-64:, -64:]
    np.testing.assert_allclose(prob[-64:, -64:], whole(model, corner), atol=1e-5)


def test_resize_models_see_the_image_at_training_scale_and_answer_at_native_size():
    model = pointwise_model()
    image = np.full((90, 120, 3), 77, np.uint8)  # uniform: resizing changes nothing but the size
    prob = Predictor(model, 64, Sampling.resize, InferenceConfig())(image)
    assert prob.shape == (90, 120, 2)
    np.testing.assert_allclose(prob, np.broadcast_to(whole(model, image[:1, :1]), (90, 120, 2)), atol=1e-5)


@pytest.mark.parametrize(("shape", "tile", "tta"), [((100, 130), None, True), ((300, 520), 256, False)])
def test_whole_mode_is_one_padded_pass_or_the_largest_tiles_within_the_memory_budget(shape, tile, tta):
    model = pointwise_model(channels=64)
    image = np.random.default_rng(3).integers(0, 256, (*shape, 3), dtype=np.uint8)
    predictor = Predictor(model, 64, Sampling.patches, InferenceConfig(mode=InferenceMode.whole,
                                                                       memory_budget_mb=64, flip_tta=tta))
    # 64 float32 channels a pixel with 4x headroom: 1 KiB a pixel, so 64 MB hold 256 x 256 pixels
    assert predictor.activation_bytes(10, 10) == 100 * 1024
    assert predictor.whole_tile(*shape) == tile
    np.testing.assert_allclose(predictor(image), whole(model, image), atol=1e-5)


def test_whole_mode_runs_a_real_unet_once_on_the_padded_image_and_falls_back_for_fixed_size_networks():
    unet = build_model("resnet18", ArchConfig(name=Arch.unet), 1, 64, None)
    assert activation_bytes_per_pixel(unet, 64) == 4 * 4 * 32  # its largest map: 32 floats per input pixel
    image = (gaussian_window(150)[..., None] * np.array([200, 120, 60])).astype(np.uint8)
    whole_pass = Predictor(unet, 64, Sampling.patches, InferenceConfig(mode=InferenceMode.whole))(image)
    padded = np.pad(image, ((0, 10), (0, 10), (0, 0)), mode="symmetric")  # 160 = 5 x 32
    np.testing.assert_allclose(whole_pass, whole(unet, padded)[:150, :150], atol=1e-5)
    fixed = Predictor(pointwise_fixed(64), 64, Sampling.patches, InferenceConfig(mode=InferenceMode.whole))
    assert not fixed.whole_capable
    np.testing.assert_allclose(fixed(image), tiled_with(fixed.model, image), atol=1e-5)


def pointwise_fixed(side: int) -> tf.keras.Model:
    """The pointwise model built for one input size only, like PSPNet."""
    inputs = tf.keras.Input((side, side, 3))
    return tf.keras.Model(inputs, pointwise_model()(inputs))


def tiled_with(model, image):
    return Predictor(model, 64, Sampling.patches, InferenceConfig(mode=TILES))(image)
