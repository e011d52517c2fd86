"""Full-resolution inference: sliding windows tile, blend and crop exactly; resize models scale back."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from retina_seg.config import InferenceConfig, Sampling
from retina_seg.inference.predictor import Predictor, gaussian_window


def pointwise_model(seed: int = 0) -> tf.keras.Model:
    """A real Keras model whose output at a pixel depends only on that pixel (1x1 convolution), so a
    correct sliding window must reproduce the whole-image prediction exactly, wherever the windows fall."""
    inputs = tf.keras.Input((None, None, 3))
    layer = tf.keras.layers.Conv2D(2, 1, activation="sigmoid")
    model = tf.keras.Model(inputs, layer(inputs))
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(0, 2, (1, 1, 3, 2)).astype(np.float32), rng.normal(0, 1, 2).astype(np.float32)])
    return model


def whole(model, image):
    return model.predict(image[None].astype(np.float32) / 255.0, verbose=0)[0]


@pytest.mark.parametrize(("shape", "stride", "tta"), [((100, 130), None, False), ((64, 64), 16, True),
                                                      ((20, 12), None, False), ((200, 70), 64, False)])
def test_sliding_window_matches_whole_image_prediction(shape, stride, tta):
    model = pointwise_model()
    image = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    predictor = Predictor(model, 64, Sampling.patches, InferenceConfig(stride=stride, flip_tta=tta, batch_size=3))
    prob = predictor(image)
    assert prob.shape == (*shape, 2)
    np.testing.assert_allclose(prob, whole(model, image), atol=1e-5)


def test_windows_overlap_by_half_by_default_and_blend_with_centre_weight():
    predictor = Predictor(pointwise_model(), 64, Sampling.patches, InferenceConfig())
    assert predictor.stride == 32
    weight = gaussian_window(64)
    assert weight[32, 32] > 0.99 and 0.01 < weight[0, 0] < weight[0, 32] < weight[32, 32]


def test_hrf_sized_image_is_predicted_window_by_window():
    model = pointwise_model()
    image = np.random.default_rng(2).integers(0, 256, (2336, 3504, 3), dtype=np.uint8)
    prob = Predictor(model, 256, Sampling.patches, InferenceConfig(stride=256, batch_size=8))(image)
    assert prob.shape == (2336, 3504, 2) and prob.dtype == np.float32
    corner = image[-64:, -64:]
    np.testing.assert_allclose(prob[-64:, -64:], whole(model, corner), atol=1e-5)


def test_resize_models_see_the_image_at_training_scale_and_answer_at_native_size():
    model = pointwise_model()
    image = np.full((90, 120, 3), 77, np.uint8)  # uniform: resizing changes nothing but the size
    prob = Predictor(model, 64, Sampling.resize, InferenceConfig())(image)
    assert prob.shape == (90, 120, 2)
    np.testing.assert_allclose(prob, np.broadcast_to(whole(model, image[:1, :1]), (90, 120, 2)), atol=1e-5)
