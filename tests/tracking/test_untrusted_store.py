"""Nothing read from a store runs as code: a run's `config.yaml` and model JSON as someone else may have edited them
on a shared server, read back by `resume=`, by reload (evaluate, predict, the served model) and by the JSON guard.

The store is a real SQLite MLflow store; the models are real tiny networks; the hostile config is a real composed
config with one node changed, as a colleague with write access to the run's artifacts could change it.
"""

from __future__ import annotations

import base64
import json
import marshal
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf
import yaml
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from retina_seg.config import ConfigError, validate
from retina_seg.model.factory import build_model
from retina_seg.run import run_job
from retina_seg.tracking.reload import ModelSourceError, load_logged_model, load_model
from tests.conftest import TINY, compose_config, isolate

pytestmark = pytest.mark.slow  # end-to-end: left out of make test-fast


def stored_config(tmp_path, edit) -> str:
    """The config.yaml a tiny run stores (composed and resolved like `run` writes it), passed through `edit`."""
    stored = yaml.safe_load(OmegaConf.to_yaml(compose_config([*TINY, *isolate(tmp_path)]), resolve=True))
    edit(stored)
    return yaml.safe_dump(stored)


def killed_run(tmp_path, config_yaml: str) -> str:
    """A KILLED run in a real store whose config.yaml artifact is `config_yaml`; returns its id."""
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("test")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(
        "test", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(experiment_id).info.run_id
    (tmp_path / "upload").mkdir(exist_ok=True)
    (tmp_path / "upload" / "config.yaml").write_text(config_yaml)
    client.log_artifact(run_id, str(tmp_path / "upload" / "config.yaml"))
    client.set_terminated(run_id, "KILLED")
    return run_id


def writes_a_file(target):
    """An edit adding a transform that writes `target` when instantiated (what a `~/.bashrc` line would be)."""
    hostile = {"_target_": "pathlib.Path.write_text",
               "_args_": [{"_target_": "pathlib.Path", "_args_": [str(target)]}, "echo owned"]}
    return lambda stored: stored["augmentation"]["transforms"].append(hostile)


def test_resume_refuses_a_stored_config_that_instantiates_code_before_any_work(tmp_path):
    target = tmp_path / "bashrc"
    run_id = killed_run(tmp_path, stored_config(tmp_path, writes_a_file(target)))
    with pytest.raises(ConfigError) as refused:
        run_job(compose_config([*isolate(tmp_path), f"resume={run_id}"]), tmp_path / "work", overrides=[])
    assert str(refused.value) == (
        f"resume={run_id}: augmentation.transforms[0]._target_='pathlib.Path.write_text' is invalid: expected an "
        "albumentations transform such as albumentations.HorizontalFlip (nothing else is instantiated)")
    assert not target.exists()
    assert not (tmp_path / "cache").exists() and not (tmp_path / "work").exists()  # no data read, no job folder
    assert MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(run_id).info.status == "KILLED"


@pytest.mark.parametrize(("transforms", "key", "target"), [
    ("[{_target_: albumentations.OneOf, transforms: [{_target_: albumentations.HorizontalFlip}, "
     "{_target_: os.system, command: 'true'}]}]", "[0].transforms[1]", "os.system"),
    ("[{_target_: albumentations.Lambda, image: {_target_: albumentations.HorizontalFlip}}]", "[0]",
     "albumentations.Lambda"),  # a transform that exists to run a callable
    ("[{_target_: albumentations.BboxParams, format: coco}]", "[0]", "albumentations.BboxParams"),  # not a transform
    ("[{_target_: albumentations.core.serialization.save}]", "[0]", "albumentations.core.serialization.save"),
])
def test_only_albumentations_transforms_are_instantiated(transforms, key, target):
    with pytest.raises(ConfigError, match=rf"^augmentation.transforms{re.escape(key)}._target_='{re.escape(target)}' "
                                          "is invalid: expected an albumentations transform"):
        validate(compose_config([f"augmentation.transforms={transforms}"]))
    assert validate(compose_config(["augmentation=strong"])).augmentation.transforms  # the project's own pass


def test_resume_refuses_an_interpolation_in_the_stored_config(tmp_path, monkeypatch):
    """`run` stores its config resolved: `${oc.env:...}` there would copy a secret into the resumed run's params."""
    monkeypatch.setenv("RETINA_SEG_TEST_SECRET", "hunter2")
    run_id = killed_run(tmp_path, stored_config(
        tmp_path, lambda stored: stored["data"].update(root="${oc.env:RETINA_SEG_TEST_SECRET}")))
    with pytest.raises(ConfigError) as refused:
        run_job(compose_config([*isolate(tmp_path), f"resume={run_id}"]), tmp_path / "work", overrides=[])
    assert str(refused.value) == (
        f"resume={run_id}: data.root='${{oc.env:RETINA_SEG_TEST_SECRET}}' is invalid: expected a plain value "
        "(config.yaml is stored resolved; an interpolation in it is never resolved)")
    assert "hunter2" not in str(refused.value)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Folders holding a real `<BACKBONE>_Retinal.json/.h5` pair each (untrained): resnet18 and seresnet34, whose
    squeeze-and-excitation blocks are Lambda layers."""
    root = tmp_path_factory.mktemp("models")
    folders = {}
    for backbone in ("resnet18", "seresnet34"):
        config = validate(compose_config([*TINY, f"backbone={backbone}"]))
        model = build_model(backbone, config.arch, 1, 64, None)
        folders[backbone] = root / backbone
        folders[backbone].mkdir()
        (folders[backbone] / f"{backbone}_Retinal.json").write_text(model.to_json())
        model.save_weights(str(folders[backbone] / f"{backbone}_Retinal.h5"))
        tf.keras.backend.clear_session()
    return folders


def test_reload_refuses_a_hostile_config_beside_a_model_before_building_it(tiny_models, tmp_path):
    """evaluate, predict and the served model all rebuild through load_logged_model."""
    target = tmp_path / "bashrc"
    folder = shutil.copytree(tiny_models["resnet18"], tmp_path / "run")
    (folder / "config.yaml").write_text(stored_config(tmp_path, writes_a_file(target)))
    (folder / "resnet18_Retinal.h5").write_bytes(b"")  # never read: the config is refused first
    with pytest.raises(ModelSourceError, match=r"config.yaml: augmentation.transforms\[0\]._target_="
                                               r"'pathlib.Path.write_text' is invalid"):
        load_logged_model(str(folder), None)
    assert not target.exists()

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run_id = client.create_run(client.create_experiment("test", str(tmp_path / "artifacts"))).info.run_id
    client.log_artifacts(run_id, str(folder))
    with pytest.raises(ModelSourceError, match=rf"^run {run_id}/config.yaml: augmentation.transforms\[0\]"):
        load_logged_model(run_id, f"sqlite:///{tmp_path}/mlflow.db")


def test_seresnet_json_reloads_untrusted_but_a_lambda_of_its_own_or_a_foreign_class_does_not(tiny_models, tmp_path):
    original = load_model(tiny_models["seresnet34"], trust=True)
    untrusted = load_model(tiny_models["seresnet34"])  # its Lambda layers run segmentation_models' expand_dims
    x = np.random.default_rng(0).random((1, 64, 64, 3), dtype=np.float32)
    np.testing.assert_array_equal(untrusted(x).numpy(), original(x).numpy())

    def other(x, channels_axis):
        return x * 0  # what else a Lambda could run

    folder = shutil.copytree(tiny_models["seresnet34"], tmp_path / "edited")
    architecture = json.loads((folder / "seresnet34_Retinal.json").read_text())
    lambdas = [layer for layer in architecture["config"]["layers"] if layer["class_name"] == "Lambda"]
    lambdas[0]["config"]["function"][0] = base64.encodebytes(marshal.dumps(other.__code__)).decode()
    (folder / "seresnet34_Retinal.json").write_text(json.dumps(architecture))
    with pytest.raises(ModelSourceError, match=r"contains \['Lambda \(own function\)'\], which no retina-seg "
                                               r"architecture produces .* \(trust_model=true\)$"):
        load_model(folder)

    folder = shutil.copytree(tiny_models["resnet18"], tmp_path / "foreign")
    architecture = json.loads((folder / "resnet18_Retinal.json").read_text())
    conv = next(layer for layer in architecture["config"]["layers"] if layer["class_name"] == "Conv2D")
    conv["module"] = "tf_keras.src.layers.convolutional.conv2d"  # a module tf-keras would import to find the class
    (folder / "resnet18_Retinal.json").write_text(json.dumps(architecture))
    with pytest.raises(ModelSourceError, match=r"contains \['Conv2D'\], which no retina-seg architecture produces"):
        load_model(folder)
    assert load_model(folder, trust=True).output_shape == (None, None, None, 1)
