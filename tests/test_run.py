"""End to end: the real runner trains a tiny model, MLflow holds the run, the model reloads identically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import cv2
import mlflow
import numpy as np
import onnxruntime
import pandas as pd
import psutil
import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from retina_seg import load_model
from retina_seg.config import ConfigError, ExportFormat, validate
from retina_seg.data.loading import load_splits
from retina_seg.data.pipeline import to_model_input
from retina_seg.predict import predict_folder
from retina_seg.run import run_job
from retina_seg.serve.export import export_network
from retina_seg.tracking import artifacts
from retina_seg.tracking.reload import load_logged_model
from retina_seg.tracking.runs import run_params
from tests.conftest import SHARED_DATA, TINY, compose_config, isolate, run_cli, runs_in

pytestmark = pytest.mark.slow  # end-to-end: left out of make test-fast


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny two-epoch job, run in-process through the same function the CLI calls (system metrics sampled
    every second instead of MLflow's 10, so that the short run has some)."""
    tmp = tmp_path_factory.mktemp("run")
    cfg = compose_config([*TINY, *isolate(tmp), "trainer.epochs=2", "augmentation=light"])
    os.environ[SAMPLING] = "1"
    try:
        result = run_job(cfg, tmp / "work")
    finally:
        del os.environ[SAMPLING]
    return tmp, cfg, result


SAMPLING = "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"


def test_run_is_finished_with_params_tags_and_metrics(finished):
    tmp, _, result = finished
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.epochs"] == "2" and run.data.params["backbone.name"] == "resnet18"
    assert run.data.params["loss.dice"] == "1.0" and run.data.params["image_size"] == "64"
    assert run.data.tags["backbone"] == "resnet18" and run.data.tags["arch"] == "unet"
    assert run.data.tags["dataset"] == "synthetic" and len(run.data.tags["git_commit"]) >= 7
    for key in ("loss", "val_loss", "iou_score", "val_iou_score", "f1-score", "val_f1-score"):
        assert [m.step for m in client.get_metric_history(result.run_id, key)] == [0, 1], key
    # each test figure is the mean of the logged per-image table's column, and IoU is Dice / (2 - Dice) per image
    per_image = pd.read_csv(client.download_artifacts(result.run_id, artifacts.PER_IMAGE, str(tmp)))
    assert len(per_image) == len(json.loads((tmp / "work" / "artifacts" / artifacts.SPLIT).read_text())["test"])
    for key in ("f1", "iou", "auc", "sensitivity", "specificity", "f1_trivial"):
        assert run.data.metrics[f"test_{key}"] == pytest.approx(per_image[key].mean()), key
    np.testing.assert_allclose(per_image["iou"], per_image["f1"] / (2 - per_image["f1"]))
    assert run.data.metrics["test_f1"] == pytest.approx(result.metrics["test_f1"])


def test_run_records_its_machine_and_its_system_use(finished):
    tmp, _, result = finished
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    tags = client.get_run(result.run_id).data.tags
    cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
               if line.startswith("model name"))
    assert tags["hardware.cpu"] == cpu and tags["hardware.cores"] == str(os.cpu_count())
    assert float(tags["hardware.memory_gb"]) == pytest.approx(psutil.virtual_memory().total / 2**30, abs=0.1)
    assert tags["hardware.tensorflow"].startswith(tf.__version__) and tags["hardware.precision"] == "32"
    assert (tags["hardware.gpu"] == "none") == (not tf.config.list_physical_devices("GPU"))
    # MLflow's own system metrics, sampled while the run was open
    cpu_use = client.get_metric_history(result.run_id, "system/cpu_utilization_percentage")
    memory = client.get_metric_history(result.run_id, "system/system_memory_usage_megabytes")
    assert len(cpu_use) >= 1 and len(memory) == len(cpu_use)
    assert 0 < memory[0].value < psutil.virtual_memory().total / 2**20


def test_the_model_card_says_what_the_model_is_for_with_its_data_and_figures(finished):
    tmp, _, result = finished
    staging = tmp / "work" / "artifacts"
    card = (staging / artifacts.MODEL_CARD).read_text()
    assert card.startswith(f"# Model card: resnet18-unet-synthetic ({result.run_id})")
    assert "**A research tool, not a diagnosis.**" in card and "retinal blood vessels" in card
    assert "| train   |        5 |" in card and "| val     |        1 |" in card and "| test    |        2 |" in card
    per_image = pd.read_csv(staging / artifacts.PER_IMAGE)
    f1 = per_image.groupby("image")["f1"].mean()
    assert f"{f1.mean():.4f} ± {f1.std(ddof=0):.4f}" in card  # the test figures with their spread
    assert "the dataset has no second human observer" in card and "trained at 32, served at 32" in card
    assert "unet with a resnet18 encoder" in card and "useless on real photographs" in card
    # the same card is among the run's artifacts and inside its MLflow model
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    assert open(client.download_artifacts(result.run_id, artifacts.MODEL_CARD, str(tmp / "card"))).read() == card
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    model = Path(mlflow.artifacts.download_artifacts(f"runs:/{result.run_id}/model", dst_path=str(tmp / "model")))
    assert (model / "artifacts" / "run" / artifacts.MODEL_CARD).read_text() == card


def test_validation_statistics_describe_the_validation_images_at_the_chosen_threshold(finished):
    tmp, _, _ = finished
    staging = tmp / "work" / "artifacts"
    stored = json.loads((staging / artifacts.VALIDATION_STATISTICS).read_text())
    split = json.loads((staging / artifacts.SPLIT).read_text())
    summary = json.loads((staging / artifacts.SUMMARY).read_text())
    assert [row["image"] for row in stored["images"]] == split["val"]
    assert stored["thresholds"] == {"vessels": pytest.approx(summary["threshold"])}
    [image] = stored["images"]
    assert 0.2 < image["fov_fraction"] < 1 and stored["summary"]["images"] == 1
    assert stored["summary"]["foreground_fraction"]["vessels"]["median"] == image["foreground_fraction"]["vessels"]


def test_the_mlflow_record_holds_no_noise(finished):
    tmp, _, result = finished
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    run = client.get_run(result.run_id)
    params = run.data.params
    assert params["data.num_images"] == "8" and int(params["model.parameters"]) > 1_000_000
    for noise in ("data.lesion_types", "data.foreground_share", "verbose", "tracking.uri",
                  "inference.stride"):  # the sliding window's knob: the default mode is whole
        assert noise not in params, noise
    # the learning rate the optimizer used in each epoch; test figures logged once, secondary ones kept out
    assert [(m.step, m.value) for m in client.get_metric_history(result.run_id, "learning_rate")] == [
        (0, pytest.approx(1e-3)), (1, pytest.approx(1e-3))]
    assert "lr" not in run.data.metrics and len(client.get_metric_history(result.run_id, "test_f1")) == 1
    assert "test_f1_at_0.5" in run.data.metrics and "test_auc_at_0.5" not in run.data.metrics
    [dataset] = run.inputs.dataset_inputs
    assert dataset.dataset.name == "synthetic" and len(dataset.dataset.digest) >= 8
    tags = {tag.key: tag.value for tag in dataset.tags}
    assert (tags["train_images"], tags["val_images"], tags["test_images"]) == ("5", "1", "2")


def test_params_leave_out_what_does_not_apply_to_a_real_dataset():
    cfg = compose_config(["experiment=chase_db1_vessels", "data.root=/data/CHASE_DB1", "inference.mode=whole"])
    params = run_params(validate(cfg), OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    assert params["data.name"] == "chase_db1" and params["data.foreground_share"] == "0.5"
    assert params["preprocess.clahe_clip_limit"] == "2.0" and params["inference.memory_budget_mb"] == "4096"
    for noise in ("data.num_images", "data.native_size", "data.lesion_types", "inference.stride", "trainer.devices"):
        assert noise not in params, noise


def test_artifacts_are_named_by_the_contract(finished):
    tmp, _, result = finished
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    root = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"resnet18_Retinal.json", "resnet18_Retinal.h5", "resnet18_Retinal.csv", "config.yaml", "curves.png",
            "test_examples.png", "metrics", "augmentation.yaml", artifacts.MODEL_CARD} <= root
    assert artifacts.VALIDATION_STATISTICS in {a.path for a in client.list_artifacts(result.run_id, "metrics")}
    folder = client.download_artifacts(result.run_id, "", str(tmp / "download"))
    history = pd.read_csv(f"{folder}/resnet18_Retinal.csv")
    assert list(history.tail()["epoch"]) == [0, 1] and "val_f1-score" in history
    assert json.loads(open(f"{folder}/metrics/summary.json").read())["test_f1"] == pytest.approx(
        result.metrics["test_f1"])
    assert pd.read_csv(f"{folder}/metrics/per_image.csv")["image"].nunique() >= 1
    assert open(f"{folder}/curves.png", "rb").read(4) == b"\x89PNG"
    logged = open(f"{folder}/augmentation.yaml").read()
    assert "HorizontalFlip" in logged and "RandomBrightnessContrast" in logged


def test_reload_from_run_id_and_folder_predicts_identically(finished, tmp_path, monkeypatch):
    tmp, cfg, result = finished
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the run's files are downloaded
    config = validate(cfg)
    test = load_splits(config.data, config.preprocess, config.seed)["test"]
    images = to_model_input(np.stack(test.images[:2]))
    # called directly, the same way (the trained model was compiled to run eagerly, a reloaded one is not)
    expected = result.model(images, training=False).numpy()
    from_run = load_model(result.run_id, tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    np.testing.assert_allclose(from_run(images, training=False).numpy(), expected, atol=1e-6)
    from_folder = load_model(tmp / "work" / "artifacts")
    np.testing.assert_allclose(from_folder(images, training=False).numpy(), expected, atol=1e-6)
    assert not list(tmp_path.iterdir())  # the downloaded copy of the weights is gone


def test_cli_run_logs_a_finished_run(tmp_path, monkeypatch):
    monkeypatch.setenv(SAMPLING, "1")  # MLflow would sample every second, were system metrics not off
    done = run_cli("retina_seg.run", [*TINY, *isolate(tmp_path), "tracking.system_metrics=false"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    [run] = runs_in(tmp_path)
    assert run.info.status == "FINISHED"
    assert not [key for key in run.data.metrics if key.startswith("system/")], run.data.metrics
    names = {a.path for a in MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").list_artifacts(run.info.run_id)}
    assert {"resnet18_Retinal.json", "resnet18_Retinal.h5", "resnet18_Retinal.csv"} <= names
    assert "epoch 1/1" in (tmp_path / "hydra" / "run.log").read_text()
    # a quiet terminal: our one line per epoch (no Keras progress line), the run and how to browse it
    assert done.stdout.count("epoch 1/1 loss=") == 1 and "loss: " not in done.stdout
    for state in ("started", "FINISHED"):
        assert (f"MLflow run {run.info.run_id} ({run.info.run_name}) in experiment 'test' {state}; "
                f"browse: mlflow ui --backend-store-uri sqlite:///{tmp_path}/mlflow.db") in done.stdout
    for noise in ("oneDNN", "cuda", "absl", "Segmentation Models", "HDF5"):
        assert noise not in done.stdout + done.stderr, noise


def test_a_run_that_raises_is_failed_and_keeps_its_files(tmp_path):
    # a crop larger than the 64 px images is only detected when the first batch is augmented
    cfg = compose_config([*TINY, *isolate(tmp_path), "augmentation=none",
                          "+augmentation.transforms=[{_target_: albumentations.RandomCrop, height: 96, width: 96}]"])
    with pytest.raises(tf.errors.UnknownError, match="(?i)crop"):  # raised in tf.data's Python augmentation step
        run_job(cfg, tmp_path / "work")
    [run] = runs_in(tmp_path)
    assert run.info.status == "FAILED"
    names = {a.path for a in MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").list_artifacts(run.info.run_id)}
    assert {"resnet18_Retinal.json", "config.yaml"} <= names


SHARED_CHASE = SHARED_DATA / "CHASE_DB1"


@pytest.mark.skipif(not SHARED_CHASE.is_dir(), reason="the shared CHASE_DB1 copy (../shared/data) is absent")
def test_cli_run_on_the_real_chase_db1_copy(tmp_path):
    done = run_cli("retina_seg.run", [*isolate(tmp_path), "data=chase_db1", f"data.root={SHARED_CHASE}",
                                      "trainer=fast", "backbone=resnet18", "image_size=128", "inference.stride=128",
                                      "trainer.evaluation_images=2"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    [run] = runs_in(tmp_path)
    assert run.info.status == "FINISHED" and run.data.tags["dataset"] == "chase_db1"
    official_test = [f"Image_{p}{e}" for p in (11, 12, 13, 14) for e in "LR"]
    assert sorted(json.loads((tmp_path / "hydra" / "artifacts" / artifacts.SPLIT).read_text())["test"]) == official_test
    per_image = pd.read_csv(MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").download_artifacts(
        run.info.run_id, "metrics/per_image.csv", str(tmp_path)))
    assert list(per_image["image"]) == official_test[:2]  # two full-resolution photographs scored


def test_bad_data_file_stops_before_training_with_one_line(tmp_path):
    from tests import layouts

    root = layouts.folder(tmp_path / "own")
    (root / "masks" / "case5.png").write_bytes(b"not a png")
    done = run_cli("retina_seg.run", [*TINY, *isolate(tmp_path), "data=folder", f"data.root={root}"], tmp_path)
    assert done.returncode == 2
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert line.endswith("case5.png: unreadable mask (missing, truncated or not an image file)")
    assert runs_in(tmp_path) == []


def test_chase_recipe_runs_unchanged_on_the_drive_layout(tmp_path):
    """The recipe composes with `data=drive` and trains on DRIVE's official layout (a miniature copy
    here; only its length is cut for the test)."""
    from tests import layouts

    root = layouts.drive(tmp_path / "DRIVE")
    done = run_cli("retina_seg.run", ["experiment=chase_db1_vessels", "data=drive", f"data.root={root}",
                                      *isolate(tmp_path)[:2], "tracking.experiment=test", "trainer.epochs=1",
                                      "trainer.steps_per_epoch=1", "image_size=64", "trainer.validation_windows=8",
                                      "trainer.evaluation_images=1"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    [run] = runs_in(tmp_path)
    assert run.info.status == "FINISHED" and run.data.tags["dataset"] == "drive"
    assert run.data.params["preprocess.clahe"] == "True" and run.data.params["data.sampling"] == "patches"
    assert run.data.params["backbone.name"] == "resnet18" and run.data.params["trainer.time_limit_minutes"] == "45.0"


def test_pspnet_trains_on_patches_and_segments_photographs_larger_than_its_window(tmp_path):
    """PSPNet is built for one image_size input. With patches (every public dataset's default) it validates on
    windows, and evaluation, predict and the exported network see 160 px photographs through 96 px windows;
    whole validation images cannot fit it and are refused at composition; trained on images resized to a size
    that is not a multiple of 32 (144), its whole-image validation set is not padded past that size."""
    patches = [*TINY, *isolate(tmp_path), "arch=pspnet", "image_size=96", "data.native_size=160",
               "data.sampling=patches"]
    result = run_job(compose_config(patches), tmp_path / "patches")
    assert result.model.input_shape == (None, 96, 96, 3)
    [run] = runs_in(tmp_path)
    assert run.info.status == "FINISHED" and "test_f1" in run.data.metrics and "val_auroc" in run.data.metrics
    photo = np.random.default_rng(0).integers(0, 256, (130, 150, 3), dtype=np.uint8)
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "photo.png"), photo)
    predict_folder(validate(compose_config([*isolate(tmp_path), f"run_id={result.run_id}",
                                            f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}"],
                                           name="predict")))
    assert cv2.imread(str(tmp_path / "out" / "photo_mask.png"), cv2.IMREAD_UNCHANGED).shape == (130, 150)
    logged = load_logged_model(result.run_id, f"sqlite:///{tmp_path}/mlflow.db")
    [network] = export_network(logged, ExportFormat.onnx, tmp_path / "onnx", result.run_id)
    assert json.loads((tmp_path / "onnx" / "inference.json").read_text())["input"]["shape"] == [None, 96, 96, 3]
    window = np.random.default_rng(1).random((1, 96, 96, 3), dtype=np.float32)
    exported = onnxruntime.InferenceSession(str(network), providers=["CPUExecutionProvider"]).run(None, {
        "image": window})[0]
    np.testing.assert_allclose(exported, logged.model(window, training=False).numpy(), atol=1e-4)
    with pytest.raises(ConfigError, match=r"^trainer.validation_windows=null is invalid for arch=pspnet with "
                                          r"data.sampling=patches: expected a number of windows"):
        validate(compose_config([*patches, "trainer.validation_windows=null"]))

    resized = run_job(compose_config([*TINY, *isolate(tmp_path), "arch=pspnet", "image_size=144",
                                      "data.native_size=160", "data.sampling=resize", "tracking.run_name=resized"]),
                      tmp_path / "resized")
    assert resized.model.input_shape == (None, 144, 144, 3)
    assert {r.info.status for r in runs_in(tmp_path)} == {"FINISHED"}


def test_a_recipe_smoke_tested_with_debug_fast_end_to_end(tmp_path):
    """`+experiment=idrid_lesions debug=fast` (the older spelling of the experiment, as users have it) on a miniature
    IDRiD: the recipe's own data, preprocessing, model, loss and class shares, trained one epoch of two steps,
    one validation and one test image evaluated, logged to the experiment `debug`."""
    from tests import layouts

    root = layouts.idrid(tmp_path / "IDRiD")
    done = run_cli("retina_seg.run", ["+experiment=idrid_lesions", "debug=fast", f"data.root={root}",
                                      *isolate(tmp_path)[:2], f"cache_dir={tmp_path}/arrays"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    [run] = runs_in(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert run.info.status == "FINISHED" and client.get_experiment(run.info.experiment_id).name == "debug"
    params = run.data.params
    recipe = {"data.name": "idrid", "backbone.name": "resnet18", "loss.bce": "1.0", "preprocess.clahe": "True",
              "data.max_side": "2144", "image_size": "256", "trainer.batch_size": "4", "trainer.lr": "0.001",
              "loss.positive_weights": "[5.0, 2.0, 2.0, 3.0]", "augmentation.name": "light"}
    smoke = {"trainer.epochs": "1", "trainer.steps_per_epoch": "2", "trainer.time_limit_minutes": "None",
             "trainer.run_eagerly": "True", "trainer.validation_windows": "8", "trainer.evaluation_images": "1",
             "inference.flip_tta": "False"}
    assert {key: params[key] for key in {**recipe, **smoke}} == {**recipe, **smoke}
    assert (params["data.class_shares.MA"], params["data.class_shares.SE"]) == ("0.2", "0.15")
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 1
    per_image = pd.read_csv(client.download_artifacts(run.info.run_id, "metrics/per_image.csv", str(tmp_path)))
    assert list(per_image["image"].unique()) == ["IDRiD_05"] and list(per_image["channel"]) == ["MA", "HE", "EX", "SE"]
