"""The config tree composes for every option of every group, and the schema rejects bad values."""

from __future__ import annotations

import dataclasses
from typing import get_type_hints

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from retina_seg.config import (
    CONF_DIR,
    Arch,
    CompareConfig,
    Config,
    ConfigError,
    EvaluateConfig,
    ExportConfig,
    PredictConfig,
    PromoteConfig,
    ReconcileConfig,
    ServerConfig,
    UploadConfig,
    refuse_overridden_smoke_trainer,
    validate,
)
from retina_seg.tracking import artifacts
from tests.conftest import compose_config

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())
OPTIONS = [(group, p.stem) for group in GROUPS for p in sorted((CONF_DIR / group).glob("*.yaml"))]


def test_every_group_has_options():
    assert {"backbone", "arch", "loss", "data", "augmentation", "trainer", "tracking"} <= set(GROUPS)
    assert len([o for o in OPTIONS if o[0] == "backbone"]) >= 12


FILLED_BY_VALIDATE = {"trainer.monitor"}  # null in YAML: the task's own measure, chosen when the config is validated


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_validates(group, option):
    # 192 divides by 32 and by 48, so every architecture accepts it
    config = validate(compose_config([f"{group}={option}", "image_size=192", "data.root=/data/somewhere"]))
    text = (CONF_DIR / group / f"{option}.yaml").read_text()
    if "@package" not in text:  # a group's own file: each value it sets reaches the validated config as written
        written = leaves(OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{option}.yaml")))
        validated = flat(OmegaConf.structured(config))
        mismatched = {key: (value, validated.get(f"{group}.{key}")) for key, value in written.items()
                      if key != "defaults" and value != "???" and "${" not in str(value)
                      and f"{group}.{key}" not in FILLED_BY_VALIDATE and validated.get(f"{group}.{key}") != value}
        assert mismatched == {}, "key: (written, validated)"
    selected = {"backbone": config.backbone.name, "arch": config.arch.name.value,
                "augmentation": config.augmentation.name, "data": config.data.name}
    if group in selected:
        assert selected[group] == option


def test_defaults():
    config = validate(compose_config([]))
    assert (config.backbone.name, config.arch.name, config.data.name) == ("resnet34", Arch.unet, "synthetic")
    assert config.encoder_weights is None
    assert config.tracking.uri.startswith("sqlite:////") and config.tracking.uri.endswith("/mlflow.db")
    assert artifacts.weights(config.backbone.name) == "resnet34_Retinal.h5"


def test_overrides_reach_the_typed_config():
    config = validate(compose_config(["backbone=efficientnetb3", "loss.focal=2", "image_size=128",
                                      "augmentation=strong", "trainer.epochs=3"]))
    assert config.backbone.name == "efficientnetb3"
    assert config.loss.weights() == {"dice": 1.0, "focal": 2.0, "bce": 0.0, "jaccard": 0.0}
    assert config.image_size == 128 and config.data.native_size == 128
    assert config.trainer.epochs == 3
    assert len(config.augmentation.transforms) > 4


@pytest.mark.parametrize(("overrides", "message"), [
    (["loss.dice=-1"], "loss.dice=-1.0 is invalid: expected a finite weight >= 0"),
    (["loss.dice=0", "loss.focal=0"], "expected at least one weight > 0"),
    (["image_size=100"], "image_size=100 is invalid: expected a multiple of 32 for arch=unet"),
    (["arch=pspnet", "image_size=64"], "expected a multiple of 48 for arch=pspnet"),
    (["trainer.lr=0"], "trainer.lr=0.0 is invalid"),
    (["trainer.monitor=val_accuracy"], "trainer.monitor='val_accuracy' is invalid"),
    (["data.val_fraction=0.6", "data.test_fraction=0.5"], "a sum below 1"),
    (["encoder_weights=random"], "encoder_weights='random' is invalid"),
    (["data=drive"], "data.root is required: set it on the command line, e.g. data.root=<value>"),
])
def test_bad_values_raise_one_clear_line(overrides, message):
    with pytest.raises(ConfigError) as error:
        validate(compose_config(overrides))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("overrides", [["trainer.epoch=3"], ["backbone=resnet35"], ["data.task=arteries"],
                                       ["image_size=big"]])
def test_unknown_keys_options_and_types_fail_at_composition(overrides):
    with pytest.raises(ConfigCompositionException):
        compose_config(overrides)


def test_a_bug_in_a_range_check_is_not_reported_as_a_config_error():
    """Only omegaconf's own errors and ConfigError are the user's; anything else is a bug and keeps its type."""
    from dataclasses import dataclass

    from omegaconf import OmegaConf

    @dataclass
    class Broken:
        size: int = 3

        def __post_init__(self) -> None:
            raise ZeroDivisionError("a bug, not a config value")

    @dataclass
    class Checked:
        size: int = 3

        def __post_init__(self) -> None:
            raise ConfigError("size=3 is invalid: expected 4")

    with pytest.raises(ZeroDivisionError):
        validate(OmegaConf.structured(Broken))
    with pytest.raises(ConfigError, match=r"^size=3 is invalid: expected 4$"):
        validate(OmegaConf.structured(Checked))


# groups whose option files are alternatives (a dataset, a loss, an encoder, a store...): each option sets its own
# values, and the schema's defaults there are neutral fallbacks, not a default option's values
ALTERNATIVES = {"backbone", "arch", "loss", "data", "augmentation", "tracking", "hydra"}
APP_CONFIGS = {"config": Config, "evaluate": EvaluateConfig, "predict": PredictConfig, "export": ExportConfig,
               "promote": PromoteConfig, "reconcile": ReconcileConfig}
OWN_FOLDER_APPS = {"compare": CompareConfig, "server": ServerConfig, "upload": UploadConfig}  # conf/apps/<app>/


def schema_defaults(schema) -> dict:
    """The schema's own default of every key (what a run stored before the key existed is given), a nested
    dataclass's where the field itself has none (trainer: TrainerConfig's)."""
    tree = OmegaConf.to_container(OmegaConf.structured(schema), resolve=True, throw_on_missing=False,
                                  enum_to_str=True)
    hints = get_type_hints(schema)
    for item in dataclasses.fields(schema):
        if tree.get(item.name) == "???" and dataclasses.is_dataclass(hints[item.name]):
            tree[item.name] = schema_defaults(hints[item.name])
    return tree


def leaves(node, key="") -> dict:
    """{'trainer.lr': 0.001, ...}: every value of a nested config by its dotted key."""
    if not isinstance(node, dict) or not node:
        return {key: node}
    return {found: value for name, child in node.items()
            for found, value in leaves(child, f"{key}.{name}" if key else name).items()}


def composed(name: str) -> dict:
    if name in OWN_FOLDER_APPS:
        with initialize_config_dir(config_dir=str(CONF_DIR / "apps" / name), version_base="1.3"):
            tree = compose(config_name=name)
    else:
        tree = compose_config([], name=name)
    return leaves(OmegaConf.to_container(tree, resolve=True, throw_on_missing=False, enum_to_str=True))


@pytest.mark.parametrize("name", [*APP_CONFIGS, *OWN_FOLDER_APPS])
def test_the_yaml_and_the_schema_hold_the_same_defaults(name):
    """conf/ is where the defaults live; the schema's defaults must say the same for every key an app's own YAML
    (and trainer/default.yaml) sets, or a run stored before a key existed is rebuilt with another value than a
    new run gets (batchnorm_momentum was 0.9 in config.yaml and null in the schema; cache_dir a folder and null)."""
    schema = schema_defaults({**APP_CONFIGS, **OWN_FOLDER_APPS}[name])
    expected = {key: value for key, value in leaves(schema).items() if value != "???"}
    drift = {key: (expected[key], value) for key, value in composed(name).items()
             if key in expected and key.split(".")[0] not in ALTERNATIVES and value != expected[key]}
    assert drift == {}, "key: (schema default, YAML value)"


EXPERIMENTS = [option for group, option in OPTIONS if group == "experiment"]


def flat(config) -> dict:
    """A composed config as {dotted key: value}, enums by name."""
    return leaves(OmegaConf.to_container(config, resolve=True, enum_to_str=True))


SMOKE = flat(OmegaConf.load(CONF_DIR / "debug" / "fast.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_debug_fast_shortens_every_recipe_and_keeps_the_rest_of_it(name):
    """debug=fast is merged after the experiment: its keys win over the recipe's trainer keys, and everything
    else (data, preprocessing, model, loss, class shares, batch size, the sweep) stays the recipe's."""
    base = [f"experiment={name}", "data.root=/data/somewhere"]
    recipe, smoke = compose_config(base), compose_config([*base, "debug=fast"])
    for key in ("trainer.epochs", "trainer.steps_per_epoch", "trainer.time_limit_minutes"):
        assert OmegaConf.select(recipe, key) != SMOKE[key]  # the recipe does set them, so debug has to win
    assert {key: value for key, value in flat(smoke).items() if key in SMOKE} == SMOKE
    assert {k: v for k, v in flat(smoke).items() if k not in SMOKE} == {k: v for k, v in flat(recipe).items()
                                                                          if k not in SMOKE}
    config = validate(smoke)
    assert config.trainer.epochs == 1 and config.trainer.steps_per_epoch == 2 and config.trainer.run_eagerly


@pytest.mark.parametrize("name", [e for e in EXPERIMENTS if "comparison" in e])
def test_debug_fast_keeps_a_recipes_sweep(name):
    base = [f"experiment={name}", "data.root=/data/somewhere"]
    recipe, smoke = compose_config(base, with_hydra=True), compose_config([*base, "debug=fast"], with_hydra=True)
    assert smoke.hydra.mode == recipe.hydra.mode and smoke.hydra.sweeper.params == recipe.hydra.sweeper.params


def choices_of(overrides):
    composed = compose_config([*overrides, "data.root=/data/IDRiD"], with_hydra=True)
    return composed.trainer, composed.hydra.runtime.choices


def test_trainer_fast_with_an_experiment_stops_and_names_debug_fast():
    overrides = ["experiment=idrid_lesions", "trainer=fast", "data.root=/data/IDRiD"]
    with pytest.raises(ConfigError) as error:
        refuse_overridden_smoke_trainer(*choices_of(overrides), overrides)
    message = str(error.value)
    assert message.startswith("trainer=fast with experiment=idrid_lesions: the experiment's trainer.epochs=100, ")
    assert "trainer.time_limit_minutes=85.0" in message and "\n" not in message
    assert message.endswith("python -m retina_seg.run experiment=idrid_lesions debug=fast data.root=/data/IDRiD")


@pytest.mark.parametrize("overrides", [
    ["trainer=fast"],  # the tiny trainer of the tests, as before
    ["experiment=idrid_lesions"],  # the recipe
    ["experiment=idrid_lesions", "trainer=fast", "debug=fast"],  # debug wins over both
    # every key the recipe sets is given on the command line: the job is what the command says
    ["experiment=idrid_lesions", "trainer=fast", "trainer.epochs=1", "trainer.steps_per_epoch=2",
     "trainer.batch_size=2", "trainer.early_stopping_patience=1", "trainer.reduce_lr_patience=1",
     "trainer.time_limit_minutes=null"],
])
def test_trainer_fast_alone_or_with_debug_fast_runs(overrides):
    refuse_overridden_smoke_trainer(*choices_of(overrides), overrides)
