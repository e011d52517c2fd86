"""What a run measured is what a user gets: its own inference settings are the default of `predict` and the
served model (a command line key overrides them), and a photograph from another camera is seen at the
training scale, judged by the width of its field of view."""

from __future__ import annotations

import base64
import logging

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest

from retina_seg.config import validate
from retina_seg.data.synthetic import generate_fundus
from retina_seg.predict import predict_folder
from retina_seg.run import run_job
from retina_seg.tracking.reload import load_segmenter
from tests.conftest import TINY, compose_config, isolate

pytestmark = pytest.mark.slow  # end-to-end: left out of make test-fast


@pytest.fixture(scope="module")
def flipped(tmp_path_factory):
    """A tiny patch-trained run whose recipe averages the four flips at inference."""
    tmp = tmp_path_factory.mktemp("flipped")
    cfg = compose_config([*TINY, *isolate(tmp), "data.sampling=patches", "data.native_size=96",
                          "inference.flip_tta=true"])
    return tmp, run_job(cfg, tmp / "work")


def photograph(size: int) -> np.ndarray:
    return generate_fundus(size, np.random.default_rng(5)).image


def predict_one(tmp, run_id, image, folder, *extra):
    folder.mkdir()
    cv2.imwrite(str(folder / "in.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    overrides = [*isolate(tmp), f"run_id={run_id}", f"input={folder / 'in.png'}", f"output={folder / 'out'}", *extra]
    predict_folder(validate(compose_config(overrides, name="predict")), overrides)
    return cv2.imread(str(folder / "out" / "in_prob.png"), cv2.IMREAD_UNCHANGED)


def test_the_runs_flip_setting_reaches_predict_and_the_served_model(flipped, tmp_path, caplog):
    tmp, result = flipped
    image = photograph(96)
    with caplog.at_level(logging.INFO, logger="retina_seg.tracking.reload"):
        own = predict_one(tmp, result.run_id, image, tmp_path / "own")
    assert "flip_tta=true, " in caplog.text and "flip_tta=true (command line)" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="retina_seg.tracking.reload"):
        unflipped = predict_one(tmp, result.run_id, image, tmp_path / "plain", "inference.flip_tta=false")
    assert "flip_tta=false (command line)" in caplog.text
    segmenter = load_segmenter(tmp / "work" / "artifacts")
    np.testing.assert_array_equal(own, np.round(segmenter.probabilities(image)[..., 0] * 255).astype(np.uint8))
    assert not np.array_equal(own, unflipped)  # the flips change the answer: the default really has them

    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    served = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model").predict(
        pd.DataFrame({"image": [base64.b64encode(encoded.tobytes()).decode()]}), params={"return_probabilities": True})
    probabilities = cv2.imdecode(np.frombuffer(base64.b64decode(served["probabilities"][0]), np.uint8),
                                 cv2.IMREAD_UNCHANGED)
    np.testing.assert_allclose(probabilities / 65535, own / 255, atol=1 / 255 + 1e-4)


def test_a_photograph_twice_as_large_is_seen_at_the_training_scale(flipped):
    tmp, _ = flipped
    small = photograph(96)  # the training scale
    large = cv2.resize(small, (192, 192), interpolation=cv2.INTER_LINEAR)  # the same eye, another camera
    segmenter = load_segmenter(tmp / "work" / "artifacts")
    assert segmenter.fov_width is not None and abs(segmenter.fov_width - 90) < 10  # recorded with the run
    at_training_scale, scale = segmenter.predict(small)
    assert scale == 1.0
    prob, scale = segmenter.predict(large)
    assert 0.45 < scale < 0.55 and prob.shape == (192, 192, 1)  # probabilities at the photograph's own size
    native = load_segmenter(tmp / "work" / "artifacts", overrides=["inference.rescale=none"])
    assert native.fov_width is None
    as_is, scale = native.predict(large)
    assert scale == 1.0
    expected = cv2.resize(at_training_scale, (192, 192), interpolation=cv2.INTER_LINEAR)
    inside = cv2.resize(segmenter.masks(at_training_scale)[..., 0].astype(np.uint8), (192, 192)) >= 0
    rescaled_error = np.abs(prob[..., 0] - expected)[inside].mean()
    native_error = np.abs(as_is[..., 0] - expected)[inside].mean()
    # seen at the training scale, the large photograph gets the answer the model gives its training images
    assert rescaled_error < 0.5 * native_error, (rescaled_error, native_error)
