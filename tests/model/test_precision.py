"""Mixed precision: policies live in the model's layers (never process-wide), the output and the losses stay
float32, the logged JSON is float32, and a model trained in bfloat16 reloads at either precision."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient

from retina_seg.config import PROJECT_ROOT, InferenceConfig, Sampling, validate
from retina_seg.inference.predictor import Predictor
from retina_seg.model.factory import build_model
from retina_seg.model.precision import (
    BF16_GAIN,
    Resolved,
    at_precision,
    bfloat16_speedup,
    choose,
    policy_of,
    resolve,
)
from retina_seg.run import run_job
from retina_seg.training.fit import compile_model
from tests.conftest import TINY, compose_config, isolate

BF16 = Resolved("bf16-mixed", "test")
FP16 = Resolved("16-mixed", "test")


def tiny(precision: Resolved | None = None, normalization: str = "unit"):
    config = validate(compose_config([*TINY, f"preprocess.normalization={normalization}"]))
    model = build_model("resnet18", config.arch, 2, 64, None, 0.9, config.preprocess.normalization, precision)
    return config, model


def test_auto_follows_what_the_machine_reports_or_measures():
    assert choose((8, 0), None).name == "16-mixed" and choose((7, 0), None).name == "16-mixed"
    assert choose((6, 1), None).name == "32" and "below 7.0" in choose((6, 1), None).reason
    assert choose(None, 2.9).name == "bf16-mixed" and choose(None, 0.1).name == "32"
    here = resolve("auto")
    gain = bfloat16_speedup()
    if abs(gain - BF16_GAIN) > 0.3:  # clearly on one side of the rule: the machine's own answer must agree
        assert here.name == ("bf16-mixed" if gain >= BF16_GAIN else "32"), (here, gain)
    assert here.reason.startswith("auto: ")
    assert resolve("16-mixed") == Resolved("16-mixed", "set in the config")


@pytest.mark.parametrize("normalization", ["unit", "backbone"])
def test_mixed_layers_compute_in_bfloat16_with_a_float32_output_and_no_global_policy(normalization):
    _, model = tiny(BF16, normalization)
    assert tf.keras.mixed_precision.global_policy().name == "float32"  # nothing leaks into the next test
    assert policy_of(model) == "mixed_bfloat16" and model.output.dtype == tf.float32
    assert all(w.dtype == tf.float32 for w in model.weights)
    inner = [layer for layer in model.layers if isinstance(layer, tf.keras.Model)]
    for network in [model, *inner]:  # the backbone normalisation wrapper holds the U-Net as a nested model
        conv = next(layer for layer in network.layers if isinstance(layer, tf.keras.layers.Conv2D))
        assert conv.compute_dtype == "bfloat16"
    out = model(tf.zeros((1, 64, 64, 3)))
    assert out.dtype == tf.float32


def test_the_float32_json_round_trips_through_a_mixed_policy():
    _, model = tiny()
    architecture = model.to_json()
    mixed = at_precision(architecture, BF16)
    assert "mixed_bfloat16" in mixed and "mixed_bfloat16" not in architecture
    assert json.loads(at_precision(mixed, "32")) == json.loads(architecture)


@pytest.mark.slow
def test_float16_training_is_loss_scaled_and_finite():
    config, model = tiny(FP16)
    compile_model(model, config.trainer, config.loss, FP16)
    assert isinstance(model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    rng = np.random.default_rng(0)
    images = rng.random((2, 64, 64, 3), np.float32)
    masks = (rng.random((2, 64, 64, 2)) > 0.8).astype(np.float32)
    losses = [float(model.train_on_batch(images, masks)[0]) for _ in range(3)]
    assert all(np.isfinite(losses)), losses
    assert model.layers[-1].compute_dtype == "float32" and policy_of(model) == "mixed_float16"


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    """A tiny bfloat16 run on the synthetic set: enough steps to learn something."""
    tmp = tmp_path_factory.mktemp("bf16")
    cfg = compose_config([*TINY, *isolate(tmp), "trainer.precision=bf16-mixed", "inference.precision=32",
                          "trainer.epochs=3", "trainer.steps_per_epoch=8", "trainer.run_eagerly=false",
                          "data.num_images=12"])
    return tmp, run_job(cfg, tmp / "work")


@pytest.mark.slow
def test_a_bfloat16_run_learns_logs_its_precision_and_writes_float32_json(bf16_run):
    tmp, result = bf16_run
    run = MlflowClient(f"sqlite:///{tmp}/mlflow.db").get_run(result.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["trainer.precision"] == "bf16-mixed" and params["trainer.precision_used"] == "bf16-mixed"
    assert params["trainer.precision_reason"] == "set in the config" and params["inference.precision_used"] == "32"
    history = MlflowClient(f"sqlite:///{tmp}/mlflow.db").get_metric_history(result.run_id, "loss")
    assert len(history) == 3 and all(np.isfinite(m.value) for m in history)
    # better than calling every pixel a vessel: the model learnt from bfloat16 arithmetic
    assert run.data.metrics["test_f1"] > run.data.metrics["test_f1_trivial"] + 0.05, run.data.metrics
    architecture = (tmp / "work" / "artifacts" / "resnet18_Retinal.json").read_text()
    assert "mixed_bfloat16" not in architecture and "float32" in architecture


RELOAD = """
import sys, numpy as np
from retina_seg import load_model
from retina_seg.config import InferenceConfig, Sampling
from retina_seg.inference.predictor import Predictor
model = load_model(sys.argv[1], tracking_uri=sys.argv[2])
image = np.load(sys.argv[3])
for precision in ("32", "bf16-mixed"):
    predictor = Predictor(model, 64, Sampling.resize, InferenceConfig(precision=precision))
    np.save(f"{sys.argv[4]}-{precision}.npy", predictor(image))
"""


@pytest.mark.slow
def test_a_bfloat16_model_reloads_in_a_fresh_process_in_float32_and_in_bfloat16(bf16_run, tmp_path):
    tmp, result = bf16_run
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    np.save(tmp_path / "image.npy", image)
    done = subprocess.run([sys.executable, "-c", RELOAD, result.run_id, f"sqlite:///{tmp}/mlflow.db",
                           str(tmp_path / "image.npy"), str(tmp_path / "prob")], capture_output=True, text=True,
                          timeout=600, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    reloaded = {p: np.load(tmp_path / f"prob-{p}.npy") for p in ("32", "bf16-mixed")}
    # this process's trained model, seen in float32: the fresh process's float32 reload is the same network
    here = Predictor(result.model, 64, Sampling.resize, InferenceConfig(precision="32"))(image)
    np.testing.assert_allclose(reloaded["32"], here, atol=1e-5)
    # and in bfloat16 the same as this process's model in bfloat16
    here_bf16 = Predictor(result.model, 64, Sampling.resize, InferenceConfig(precision="bf16-mixed"))(image)
    np.testing.assert_allclose(reloaded["bf16-mixed"], here_bf16, atol=1e-5)
    # bfloat16 keeps 8 bits of mantissa: probabilities agree with float32 to about 1e-3, masks nearly everywhere
    difference = np.abs(reloaded["bf16-mixed"] - here)
    assert difference.mean() < 0.01 and difference.max() < 0.1, (difference.mean(), difference.max())
    assert ((reloaded["bf16-mixed"] >= 0.5) == (here >= 0.5)).mean() > 0.99
