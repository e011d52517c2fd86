"""Cross-validation end to end: one 2-fold run of a tiny model, reused by every test of this module
(the fold ensemble is also what the cross-dataset table and the reports are checked on)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from retina_seg.config import ConfigError, InferenceConfig, Sampling, validate
from retina_seg.data.loading import DataError, load_splits, read_image, read_mask
from retina_seg.evaluate import cross_dataset, reevaluate
from retina_seg.inference.metrics import observer_metrics
from retina_seg.inference.predictor import Predictor
from retina_seg.predict import predict_folder
from retina_seg.run import run_job
from retina_seg.tracking.reload import ModelSourceError, load_logged_model
from tests import layouts
from tests.conftest import TINY, compose_config, isolate, run_cli

pytestmark = pytest.mark.slow  # end-to-end: left out of make test-fast

STANDALONE = Path(__file__).parent / "serve" / "standalone.py"  # runs an export without retina-seg


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cv")
    # patches: a model that sees native pixels, so cross-dataset evaluation rescales the targets
    result = run_job(compose_config([*TINY, *isolate(tmp), "cv.folds=2", "data.sampling=patches"]), tmp / "work")
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    parent = client.get_run(result.run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'")
    folds = sorted((r for r in children if "cv_fold" in r.data.tags), key=lambda r: r.data.tags["cv_fold"])
    return tmp, client, parent, folds


def artifact_json(client, run_id, path, tmp_path):
    return json.loads(open(client.download_artifacts(run_id, path, str(tmp_path))).read())


def test_parent_run_holds_nested_fold_runs_their_split_and_fold_statistics(cv_run, tmp_path):
    tmp, client, parent, folds = cv_run
    assert parent.info.status == "FINISHED" and parent.data.tags["cv_folds"] == "2"
    assert [r.data.tags["cv_fold"] for r in folds] == ["0", "1"] and {r.info.status for r in folds} == {"FINISHED"}
    record = artifact_json(client, parent.info.run_id, "cv_split.json", tmp_path)
    assert record["held_out_fold_is"] == "test"  # synthetic data has no official test split
    tested = [stem for split in record["splits"] for stem in split["test"]]
    assert sorted(tested) == [f"{n:03d}" for n in range(8)]  # every image tested exactly once
    for fold, split in zip(folds, record["splits"], strict=True):
        assert artifact_json(client, fold.info.run_id, "split.json", tmp_path / fold.info.run_id) == split
        assert not set(split["test"]) & set(split["train"] + split["val"])

    f1 = np.array([r.data.metrics["test_f1"] for r in folds])
    metrics = parent.data.metrics
    assert metrics["test_f1_fold_mean"] == pytest.approx(f1.mean())
    assert metrics["test_f1_fold_sd"] == pytest.approx(f1.std(ddof=1))
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "folds.csv", str(tmp_path)))
    assert list(table["run_id"]) == [r.info.run_id for r in folds]
    np.testing.assert_allclose(table["test_f1"], f1)
    # the parent's own test_f1 is the out-of-fold estimate: all 8 images, each scored by the fold that held it out
    pooled = pd.read_csv(client.download_artifacts(parent.info.run_id, "metrics/per_image.csv", str(tmp_path)))
    assert len(pooled) == 8 and metrics["test_f1"] == pytest.approx(pooled["f1"].mean())
    assert "folds.md" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_the_parent_run_id_predicts_with_the_mean_of_the_folds(cv_run, tmp_path):
    tmp, client, parent, folds = cv_run
    uri = f"sqlite:///{tmp}/mlflow.db"
    ensemble = load_logged_model(parent.info.run_id, uri)
    assert len(ensemble.models) == 2
    assert ensemble.thresholds["vessels"] == pytest.approx(np.mean([r.data.metrics["threshold"] for r in folds]))
    image_path = next((tmp / "cache").rglob("images/000.png"))
    image = read_image(image_path)
    members = [Predictor(m, 64, Sampling.patches, InferenceConfig())(image) for m in ensemble.models]
    # the first member is fold 0's model, loaded on its own
    np.testing.assert_allclose(members[0], load_logged_model(folds[0].info.run_id, uri).predictor(
        InferenceConfig())(image), atol=1e-6)
    averaged = ensemble.predictor(InferenceConfig())(image)
    assert not np.allclose(members[0], members[1], atol=1e-3)  # two different models
    np.testing.assert_allclose(averaged, (members[0] + members[1]) / 2, atol=1e-5)

    overrides = [*isolate(tmp), f"run_id={parent.info.run_id}", f"input={image_path}", f"output={tmp_path}",
                 "inference.fov_mask=false"]
    done, _ = predict_folder(validate(compose_config(overrides, name="predict")), overrides)
    assert [p.name for p in done] == ["000.png"]
    written = cv2.imread(str(tmp_path / "000_prob.png"), cv2.IMREAD_UNCHANGED)
    assert np.abs(written.astype(int) - np.round(averaged[..., 0] * 255)).max() <= 1

    # the parent's logged MLflow model serves the same ensemble: predict's mask, pixel for pixel
    predict_folder(validate(compose_config([*isolate(tmp), f"run_id={parent.info.run_id}", f"input={image_path}",
                                            f"output={tmp_path}/own"], name="predict")))
    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model(f"runs:/{parent.info.run_id}/model").predict(
        pd.DataFrame({"image": [base64.b64encode(image_path.read_bytes()).decode()]}))
    mask = cv2.imdecode(np.frombuffer(base64.b64decode(served["mask"][0]), np.uint8), cv2.IMREAD_UNCHANGED)
    expected = cv2.imread(str(tmp_path / "own" / "000_mask.png"), cv2.IMREAD_UNCHANGED)
    assert expected.any() and not expected.all(), "a constant mask would prove nothing"
    np.testing.assert_array_equal(mask, expected)


def test_export_of_the_parent_writes_every_fold_and_a_runtime_averages_them(cv_run, tmp_path):
    """It wrote fold 0's network alone, under the thresholds chosen for the folds' average."""
    tmp, client, parent, folds = cv_run
    done = run_cli("retina_seg.export", [f"run_id={parent.info.run_id}", "format=savedmodel",
                                         f"output={tmp_path / 'out'}", *isolate(tmp)[:1]], tmp_path / "a")
    assert done.returncode == 0, done.stderr[-2000:]
    spec = json.loads((tmp_path / "out" / "inference.json").read_text())
    assert spec["members"] == ["folds/fold0/savedmodel", "folds/fold1/savedmodel"] and "file" not in spec
    assert spec["thresholds"]["vessels"] == pytest.approx(np.mean([r.data.metrics["threshold"] for r in folds]))
    ensemble = load_logged_model(parent.info.run_id, f"sqlite:///{tmp}/mlflow.db")
    window = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    np.save(tmp_path / "window.npy", window)
    ran = subprocess.run([sys.executable, str(STANDALONE), str(tmp_path / "out"), str(tmp_path / "window.npy"),
                          str(tmp_path / "prob.npy")], capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr[-2000:]
    members = [m(window, training=False).numpy() for m in ensemble.models]
    assert not np.allclose(members[0], members[1], atol=1e-3)  # fold 0 alone would not pass
    np.testing.assert_allclose(np.load(tmp_path / "prob.npy"), np.mean(members, axis=0), atol=1e-5)


def test_evaluating_an_ensemble_on_images_its_folds_trained_on_is_refused(cv_run, tmp_path):
    tmp, _, parent, _ = cv_run
    config = validate(compose_config([*isolate(tmp), f"run_id={parent.info.run_id}"], name="evaluate"))
    with pytest.raises(ConfigError, match=r"cross-validation ensemble whose folds trained on every image"):
        reevaluate(config, tmp_path, own_data=True)


def test_reports_of_the_fold_runs_and_of_the_parent(cv_run, tmp_path):
    _, client, parent, folds = cv_run
    fold = folds[0].info.run_id
    names = {a.path for a in client.list_artifacts(fold)} | {a.path for a in client.list_artifacts(fold, "figures")}
    assert {"report.html", "report.md", "figures/roc_pr.png", "figures/best_worst.png"} <= names
    page = open(client.download_artifacts(fold, "report.html", str(tmp_path))).read()
    # one self-contained file: curves, ROC/PR and error maps embedded, nothing fetched from elsewhere
    assert page.count('src="data:image/png;base64,') == 3 and 'src="http' not in page
    markdown = open(client.download_artifacts(fold, "report.md", str(tmp_path))).read()
    for heading in ("Config that differs from the defaults", "Data split", "Test metrics", "Training curves",
                    "ROC and precision-recall curves", "Worst and best test images by F1", "Per-image test metrics"):
        assert f"## {heading}" in markdown
    assert "| cv.folds " in markdown and "| backbone.name " in markdown and "| seed " not in markdown
    split = artifact_json(client, fold, "split.json", tmp_path)
    assert " ".join(split["test"]) in markdown
    f1 = folds[0].data.metrics["test_f1"]
    assert f"{f1:.4f} ± {folds[0].data.metrics['test_f1_sd']:.4f}" in markdown  # mean ± sd over images
    summary = open(client.download_artifacts(parent.info.run_id, "report.md", str(tmp_path / "p"))).read()
    assert "## Mean and sd over folds" in summary and f"{f1:.4f}" in summary
    assert "out-of-fold" in summary


def test_cross_dataset_table_of_the_ensemble(cv_run, tmp_path):
    tmp, client, parent, _ = cv_run
    drive, stare = layouts.drive(tmp_path / "DRIVE"), layouts.stare(tmp_path / "STARE")
    done = run_cli("retina_seg.evaluate", [f"run_id={parent.info.run_id}", "targets=[synthetic,drive,stare]",
                                           f"roots.drive={drive}", f"roots.stare={stare}", *isolate(tmp)[:2]],
                   tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained on (rows) x tested on (columns)" in done.stdout
    [table_run] = client.search_runs([parent.info.experiment_id], "tags.cross_dataset = 'synthetic,drive,stare'")
    assert {"cross_dataset.csv", "cross_dataset.md", "cross_dataset.png"} <= {
        a.path for a in client.list_artifacts(table_run.info.run_id)}
    table = pd.read_csv(client.download_artifacts(table_run.info.run_id, "cross_dataset.csv", str(tmp_path)))
    assert list(table["tested_on"]) == ["synthetic", "drive", "stare"] and set(table["trained_on"]) == {"synthetic"}
    # the diagonal is the run's own (out-of-fold) result; off it, nested evaluations of the ensemble
    assert table.loc[0, "test_f1"] == pytest.approx(parent.data.metrics["test_f1"])
    evaluations = {r.data.tags["dataset"]: r for r in client.search_runs(
        [parent.info.experiment_id], f"tags.evaluates_run = '{parent.info.run_id}'")}
    assert set(evaluations) == {"drive", "stare"}
    for row in table.iloc[1:].itertuples():
        assert row.test_f1 == pytest.approx(evaluations[row.tested_on].data.metrics["test_f1"])
        # 48 px miniature images against a model trained on 64 px images: scaled up to the training FOV width
        assert row.scale == pytest.approx(parent.data.metrics["fov_width_px"] / 44, rel=0.1)
    # DRIVE ships a second observer: scored on the (rescaled) test images beside the model
    drive_run = evaluations["drive"].info.run_id
    observer = pd.read_csv(client.download_artifacts(drive_run, "metrics/second_observer.csv", str(tmp_path)))
    truth = load_splits(validate(compose_config(["data=drive", f"data.root={drive}"])).data,
                        validate(compose_config([])).preprocess, 42)["test"]
    native = observer_metrics(truth, {n: read_mask(drive / "test" / "2nd_manual" / f"{n[:2]}_manual2.gif")
                                      for n in truth.names})
    assert list(observer["image"]) == truth.names
    assert observer["f1"].mean() == pytest.approx(native["f1"].mean(), abs=0.1) and observer["f1"].mean() < 0.9
    report = open(client.download_artifacts(drive_run, "report.md", str(tmp_path))).read()
    assert "| 2nd human observer " in report and "| data.sampling " in report  # the evaluated model's config


def test_cross_dataset_input_is_checked_before_anything_is_predicted(cv_run, tmp_path):
    tmp, _, parent, _ = cv_run
    base = [*isolate(tmp), f"run_id={parent.info.run_id}"]
    for overrides, message in ((["targets=[drive]"], r"roots.drive is required to test on drive"),
                               (["targets=[nope]"], r"targets has 'nope': expected dataset names among"),
                               (["targets=[stare]", f"roots.stare={tmp_path}"], r"has no stare-images folder")):
        with pytest.raises((ConfigError, DataError, ModelSourceError), match=message):
            cross_dataset(validate(compose_config([*base, *overrides], name="evaluate")), tmp_path)
