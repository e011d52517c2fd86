"""`retina_seg.export`: each format runs without retina-seg and gives the Keras model's probabilities within 1e-4
on a real image; `inference.json` says everything inference needs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from retina_seg.config import ExportFormat
from retina_seg.data.pipeline import to_model_input
from retina_seg.serve.export import export_network
from retina_seg.tracking.reload import load_logged_model
from tests.conftest import isolate, run_cli

pytestmark = pytest.mark.slow  # end-to-end: left out of make test-fast

STANDALONE = Path(__file__).with_name("standalone.py")


@pytest.fixture(scope="module")
def exported(logged, tmp_path_factory):
    """Every format exported from the shared run (in process), and one 64 px window of a real photograph."""
    tmp, result, inputs = logged
    folder = tmp_path_factory.mktemp("exports")
    model = load_logged_model(result.run_id, f"sqlite:///{tmp}/mlflow.db")
    for fmt in ExportFormat:
        export_network(model, fmt, folder / fmt.value, result.run_id)
    photo = cv2.cvtColor(cv2.imread(str(inputs / "colour.png")), cv2.COLOR_BGR2RGB)
    window = to_model_input(cv2.resize(photo, (64, 64), interpolation=cv2.INTER_AREA)[None])
    np.save(folder / "window.npy", window)
    return folder, model, window


@pytest.mark.parametrize("fmt", list(ExportFormat), ids=lambda f: f.value)
def test_export_runs_standalone_and_matches_keras(exported, fmt):
    folder, model, window = exported
    done = subprocess.run([sys.executable, str(STANDALONE), str(folder / fmt.value), str(folder / "window.npy"),
                           str(folder / f"{fmt.value}.npy")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = model.model(window, training=False).numpy()
    assert expected.std() > 1e-3, "a constant map would prove nothing"
    np.testing.assert_allclose(np.load(folder / f"{fmt.value}.npy"), expected, atol=1e-4)


def test_inference_json_says_what_inference_needs(exported):
    folder, model, _ = exported
    spec = json.loads((folder / "tflite" / "inference.json").read_text())
    assert spec["input"]["channel_order"] == "RGB" and spec["input"]["shape"] == [1, 64, 64, 3]
    assert spec["window"] == 64 and spec["class_names"] == ["vessels"] and spec["fov_mask"] is True
    assert spec["thresholds"] == model.thresholds and spec["preprocessing"]["green_channel"] is False


def test_export_cli_writes_the_files_and_refuses_a_used_folder(logged, tmp_path):
    tmp, result, _ = logged
    args = [f"run_id={result.run_id}", "format=savedmodel", f"output={tmp_path / 'out'}", *isolate(tmp)[:1]]
    done = run_cli("retina_seg.export", args, tmp_path / "a")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "savedmodel" / "saved_model.pb").is_file()
    done = run_cli("retina_seg.export", args, tmp_path / "b")
    assert done.returncode == 2 and "is not empty: choose a new folder" in done.stderr
