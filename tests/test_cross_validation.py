"""Cross-validation end to end: one 2-fold run of a tiny model, reused by every test of this module
(the fold ensemble is also what the cross-dataset table and the reports are checked on)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from retina_seg.config import ConfigError, InferenceConfig, validate
from retina_seg.data.loading import read_image
from retina_seg.evaluate import reevaluate
from retina_seg.predict import predict_folder
from retina_seg.run import run_job
from retina_seg.tracking.reload import load_logged_model
from tests.conftest import TINY, compose_config, isolate


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cv")
    result = run_job(compose_config([*TINY, *isolate(tmp), "cv.folds=2"]), tmp / "work")
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
    members = [load_logged_model(r.info.run_id, uri).predictor(InferenceConfig())(image) for r in folds]
    averaged = ensemble.predictor(InferenceConfig())(image)
    assert not np.allclose(members[0], members[1], atol=1e-3)  # two different models
    np.testing.assert_allclose(averaged, (members[0] + members[1]) / 2, atol=1e-5)

    config = validate(compose_config([*isolate(tmp), f"run_id={parent.info.run_id}", f"input={image_path}",
                                      f"output={tmp_path}"], name="predict"))
    done, _ = predict_folder(config)
    assert [p.name for p in done] == ["000.png"]
    written = cv2.imread(str(tmp_path / "000_prob.png"), cv2.IMREAD_UNCHANGED)
    assert np.abs(written.astype(int) - np.round(averaged[..., 0] * 255)).max() <= 1


def test_evaluating_an_ensemble_on_images_its_folds_trained_on_is_refused(cv_run, tmp_path):
    tmp, _, parent, _ = cv_run
    config = validate(compose_config([*isolate(tmp), f"run_id={parent.info.run_id}"], name="evaluate"))
    with pytest.raises(ConfigError, match=r"cross-validation ensemble whose folds trained on every image"):
        reevaluate(config, tmp_path, own_data=True)
