"""`evaluate` and `predict` on a real logged run, and their answers to bad input."""

from __future__ import annotations

import base64
import gzip
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient

from retina_seg.config import ConfigError, ServeConfig, validate
from retina_seg.data.loading import load_splits, read_image
from retina_seg.evaluate import cross_dataset
from retina_seg.predict import predict_folder
from retina_seg.reporting.figures import error_map
from retina_seg.run import run_job
from retina_seg.serve.contract import decode_row
from retina_seg.tracking.reload import ModelSourceError, load_model
from tests import layouts
from tests.conftest import TINY, compose_config, isolate, run_cli

pytestmark = pytest.mark.slow  # end-to-end: left out of make test-fast


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    result = run_job(compose_config([*TINY, *isolate(tmp)]), tmp / "work")
    return tmp, result


def predict_config(tmp, *overrides):
    return validate(compose_config([*isolate(tmp), *overrides], name="predict"))


def test_evaluate_command_logs_a_nested_run_with_the_same_numbers(trained):
    tmp, result = trained
    done = run_cli("retina_seg.evaluate", [f"run_id={result.run_id}", *isolate(tmp)[:2],
                                           "tracking.experiment=test"], tmp / "eval")
    assert done.returncode == 0, done.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    [child] = client.search_runs([client.get_run(result.run_id).info.experiment_id],
                                 f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert child.info.status == "FINISHED" and child.data.tags["dataset"] == "synthetic"
    # own dataset, own split, same model: the same threshold and the same test metrics
    assert child.data.metrics["threshold"] == pytest.approx(result.metrics["threshold"])
    assert child.data.metrics["test_f1"] == pytest.approx(result.metrics["test_f1"], abs=1e-6)
    assert {"metrics", "test_examples.png"} <= {a.path for a in client.list_artifacts(child.info.run_id)}


def test_cross_dataset_evaluation_on_another_layout(trained, tmp_path):
    tmp, result = trained
    root = layouts.drive(tmp_path / "DRIVE")
    done = run_cli("retina_seg.evaluate", [f"run_id={result.run_id}", *isolate(tmp)[:2], "tracking.experiment=test",
                                           "data=drive", f"data.root={root}"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    runs = client.search_runs([client.get_run(result.run_id).info.experiment_id], "tags.dataset = 'drive'")
    assert [r.data.params["data.name"] for r in runs] == ["drive"]
    per_image = client.download_artifacts(runs[0].info.run_id, "metrics/per_image.csv", str(tmp_path))
    assert sorted(set(np.loadtxt(per_image, delimiter=",", skiprows=1, usecols=0, dtype=str))) == [
        f"{n:02d}_test" for n in range(1, 5)]


def test_cross_dataset_threshold_is_the_runs_own_unless_target_is_asked(trained, tmp_path):
    """threshold=source (the default) applies the run's own validation threshold, as predict does: its masks are
    predict's; threshold=target chooses one on the target's validation split, and the table keeps both F1 values."""
    tmp, result = trained
    drive = layouts.drive(tmp_path / "DRIVE")
    base = [*isolate(tmp)[:2], "tracking.experiment=test", f"run_id={result.run_id}", "targets=[drive]",
            f"roots.drive={drive}", f"cache_dir={tmp_path}/arrays"]
    [source] = cross_dataset(validate(compose_config(base, name="evaluate")), tmp_path / "s").to_dict("records")
    [target] = cross_dataset(validate(compose_config([*base, "threshold=target"], name="evaluate")),
                             tmp_path / "t").to_dict("records")
    assert source["threshold"] == pytest.approx(result.metrics["threshold"]) and source["scale"] == 1.0
    assert target["threshold"] != pytest.approx(source["threshold"])  # DRIVE's validation split chose another
    assert target["test_f1"] != pytest.approx(source["test_f1"])
    assert (target["test_f1_at_source_threshold"], target["source_threshold"]) == (source["test_f1"],
                                                                                   source["threshold"])
    assert target["test_auc"] == source["test_auc"]  # the threshold does not move AUC
    table = pd.read_csv(tmp_path / "t" / "artifacts" / "cross_dataset.csv")
    assert list(table["threshold_rule"]) == ["target"] and "test_f1_at_source_threshold" in table
    assert "threshold=target" in (tmp_path / "t" / "artifacts" / "cross_dataset.md").read_text()
    assert "threshold=source" in (tmp_path / "s" / "artifacts" / "cross_dataset.md").read_text()

    # the default's masks are predict's on the same images at the same scale (the model was trained on resized
    # images, so the targets were not rescaled); compared through the evaluation's full-size error maps, which
    # paint the masks inside DRIVE's FOV (predict's own FOV, derived from the image, is turned off for that)
    config = validate(compose_config(["data=drive", f"data.root={drive}"]))
    test = load_splits(config.data, config.preprocess, config.seed)["test"]
    predict_folder(predict_config(tmp, f"run_id={result.run_id}", f"input={drive / 'test' / 'images'}",
                                  f"output={tmp_path / 'p'}"), ["inference.fov_mask=false"])
    logged = sorted((tmp_path / "s").glob("*-drive/artifacts/examples/*_errors.png"))
    assert [p.name for p in logged] == ["01_test_errors.png", "02_test_errors.png", "03_test_errors.png"]
    for index, errors in enumerate(logged):
        mask = cv2.imread(str(tmp_path / "p" / f"{test.names[index]}_mask.png"), cv2.IMREAD_GRAYSCALE) > 0
        assert 0 < mask[test.fov[index]].mean() < 1  # neither empty nor full: the threshold shapes it
        expected = error_map(test.images[index], test.masks[index][..., 0], mask, test.fov[index])
        np.testing.assert_array_equal(cv2.cvtColor(cv2.imread(str(errors)), cv2.COLOR_BGR2RGB), expected)


def write_inputs(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "colour.png"), colour)
    cv2.imwrite(str(folder / "grey.png"), colour[..., 1])
    cv2.imwrite(str(folder / "rgba.png"), np.dstack([colour, np.full((70, 90), 200, np.uint8)]))
    cv2.imwrite(str(folder / "small.jpg"), colour[:20, :12])  # smaller than the 64 px window
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder


def test_predict_writes_prob_mask_and_overlay_and_skips_unreadable_files(trained, tmp_path):
    tmp, result = trained
    inputs = write_inputs(tmp_path / "in")
    done, skipped = predict_folder(predict_config(tmp, f"run_id={result.run_id}", f"input={inputs}",
                                                  f"output={tmp_path / 'out'}"))
    assert sorted(p.name for p in done) == ["colour.png", "grey.png", "rgba.png", "small.jpg"]
    assert len(skipped) == 1 and "broken.png: unreadable image" in skipped[0]
    for stem, shape in (("colour", (70, 90)), ("grey", (70, 90)), ("rgba", (70, 90)), ("small", (20, 12))):
        prob = cv2.imread(str(tmp_path / "out" / f"{stem}_prob.png"), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(tmp_path / "out" / f"{stem}_mask.png"), cv2.IMREAD_UNCHANGED)
        overlay = cv2.imread(str(tmp_path / "out" / f"{stem}_overlay.png"))
        assert prob.shape == mask.shape == shape and overlay.shape == (*shape, 3)
        assert set(np.unique(mask)) <= {0, 255}
        # the mask is the probability at the validation threshold (the PNG holds round(255 p))
        level = round(result.metrics["threshold"] * 255)
        assert (mask[prob > level] == 255).all() and (mask[prob < level] == 0).all()


def test_predict_and_the_served_model_read_every_netpbm_format(trained, tmp_path):
    tmp, result = trained
    folder = tmp_path / "netpbm"
    folder.mkdir()
    colour = np.random.default_rng(1).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    for name, pixels in (("grey.pgm", colour[..., 1]), ("ink.pbm", (colour[..., 0] > 127).astype(np.uint8) * 255),
                         ("any.pnm", colour), ("colour.ppm", colour)):
        assert cv2.imwrite(str(folder / name), pixels)
    (folder / "zipped.pgm.gz").write_bytes(gzip.compress((folder / "grey.pgm").read_bytes()))
    done, skipped = predict_folder(predict_config(tmp, f"run_id={result.run_id}", f"input={folder}",
                                                  f"output={tmp_path / 'out'}"))
    assert sorted(p.name for p in done) == ["any.pnm", "colour.ppm", "grey.pgm", "ink.pbm", "zipped.pgm.gz"]
    assert skipped == []
    for stem in ("any", "colour", "grey", "ink", "zipped"):
        assert cv2.imread(str(tmp_path / "out" / f"{stem}_mask.png"), cv2.IMREAD_UNCHANGED).shape == (40, 52)
    np.testing.assert_array_equal(read_image(folder / "zipped.pgm.gz"), read_image(folder / "grey.pgm"))
    for name in ("any.pnm", "colour.ppm", "grey.pgm", "ink.pbm"):  # a request carries the file's bytes
        text = base64.b64encode((folder / name).read_bytes()).decode("ascii")
        np.testing.assert_array_equal(decode_row(text, 0, ServeConfig()), read_image(folder / name))


def test_predict_from_a_model_folder_matches_the_run(trained, tmp_path):
    tmp, result = trained
    inputs = write_inputs(tmp_path / "in")
    predict_folder(predict_config(tmp, f"model={tmp / 'work' / 'artifacts'}", f"input={inputs / 'colour.png'}",
                                  f"output={tmp_path / 'a'}"))
    predict_folder(predict_config(tmp, f"run_id={result.run_id}", f"input={inputs / 'colour.png'}",
                                  f"output={tmp_path / 'b'}"))
    a = cv2.imread(str(tmp_path / "a" / "colour_prob.png"), cv2.IMREAD_UNCHANGED)
    b = cv2.imread(str(tmp_path / "b" / "colour_prob.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(a, b)


def test_predict_names_outputs_by_the_whole_stem_and_refuses_two_inputs_with_one_stem(trained, tmp_path):
    """`a.v1.png` and `a.v2.png` used to write both masks to `a_mask.png`, the second silently over the first."""
    tmp, result = trained
    inputs = write_inputs(tmp_path / "in")
    colour = cv2.imread(str(inputs / "colour.png"))
    for name in ("colour.png", "grey.png", "rgba.png", "small.jpg", "broken.png"):
        (inputs / name).unlink()
    cv2.imwrite(str(inputs / "a.v1.png"), colour)
    cv2.imwrite(str(inputs / "a.v2.png"), colour[::-1])
    done, _ = predict_folder(predict_config(tmp, f"run_id={result.run_id}", f"input={inputs}",
                                            f"output={tmp_path / 'out'}"))
    assert [p.name for p in done] == ["a.v1.png", "a.v2.png"]
    first, second = (cv2.imread(str(tmp_path / "out" / f"a.v{n}_prob.png"), cv2.IMREAD_UNCHANGED) for n in (1, 2))
    assert first.shape == second.shape == (70, 90) and not np.array_equal(first, second)  # one map per photograph
    cv2.imwrite(str(inputs / "a.v1.jpg"), colour)  # the same stem: both would be a.v1_mask.png
    with pytest.raises(ConfigError, match=r"^input='.*': a\.v1\.jpg and a\.v1\.png would write the same output "
                                          r"files \(a\.v1_mask\.png, \.\.\.\): rename or move one of them$"):
        predict_folder(predict_config(tmp, "run_id=no-such-run", f"input={inputs}", f"output={tmp_path / 'o'}"))


def test_predict_cli_reports_skips_and_exit_codes(trained, tmp_path):
    tmp, result = trained
    inputs = write_inputs(tmp_path / "in")
    done = run_cli("retina_seg.predict", [f"run_id={result.run_id}", f"input={inputs}", f"output={tmp_path}/out",
                                          *isolate(tmp)[:2]], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "skipped: " in done.stderr and "broken.png" in done.stderr
    (tmp_path / "empty").mkdir()
    done = run_cli("retina_seg.predict", [f"run_id={result.run_id}", f"input={tmp_path}/empty",
                                          f"output={tmp_path}/out2", *isolate(tmp)[:2]], tmp_path)
    assert done.returncode == 2 and "holds no image files" in done.stderr
    (tmp_path / "unreadable").mkdir()
    (tmp_path / "unreadable" / "broken.png").write_bytes((inputs / "broken.png").read_bytes())
    done = run_cli("retina_seg.predict", [f"run_id={result.run_id}", f"input={tmp_path}/unreadable",
                                          f"output={tmp_path}/out3", *isolate(tmp)[:2]], tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == f"error: input='{tmp_path / 'unreadable'}': no image could be read"


def test_unknown_run_id_and_run_without_model(trained, tmp_path):
    tmp, result = trained
    inputs = write_inputs(tmp_path / "in")
    with pytest.raises(ModelSourceError, match=r"run 'no-such-run' not found"):
        predict_folder(predict_config(tmp, "run_id=no-such-run", f"input={inputs}", f"output={tmp_path}/o"))
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    empty = client.create_run(client.get_experiment_by_name("test").experiment_id).info.run_id
    client.set_terminated(empty)
    with pytest.raises(ModelSourceError, match=r"has no \*_Retinal.json / .h5 model artifacts"):
        predict_folder(predict_config(tmp, f"run_id={empty}", f"input={inputs}", f"output={tmp_path}/o"))
    half = client.create_run(client.get_experiment_by_name("test").experiment_id).info.run_id
    client.log_artifact(half, client.download_artifacts(result.run_id, "resnet18_Retinal.json", str(tmp_path)))
    client.set_terminated(half)
    with pytest.raises(ModelSourceError, match=rf"^run {half}: resnet18_Retinal.json has no matching resnet18_"
                                               r"Retinal.h5$"):
        predict_folder(predict_config(tmp, f"run_id={half}", f"input={inputs}", f"output={tmp_path}/o"))
    with pytest.raises(ConfigError, match=r"run_id / model"):
        predict_config(tmp, f"input={inputs}", f"output={tmp_path}/o")


def test_json_and_h5_that_do_not_match(trained, tmp_path):
    tmp, _ = trained
    folder = tmp_path / "mixed"
    shutil.copytree(tmp / "work" / "artifacts", folder)
    other = tf.keras.Sequential([tf.keras.Input((None, None, 3)), tf.keras.layers.Conv2D(1, 1)])
    other.save_weights(str(folder / "resnet18_Retinal.h5"))
    with pytest.raises(ModelSourceError, match=r"resnet18_Retinal.h5 does not match resnet18_Retinal.json"):
        load_model(folder)


def test_code_carrying_json_is_refused_unless_trusted(tmp_path):
    inputs = tf.keras.Input((None, None, 3))
    model = tf.keras.Model(inputs, tf.keras.layers.Lambda(lambda x: x[..., :1] * 0.5)(inputs))
    (tmp_path / "lam_Retinal.json").write_text(model.to_json())
    model.save_weights(str(tmp_path / "lam_Retinal.h5"))
    with pytest.raises(ModelSourceError, match=r"contains \['Lambda \(own function\)'\], which no retina-seg "
                                               "architecture produces"):
        load_model(tmp_path)
    trusted = load_model(tmp_path, trust=True)
    assert trusted.output_shape == (None, None, None, 1)
