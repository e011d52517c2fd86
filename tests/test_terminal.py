"""What a user sees in the terminal: clean YAML from `--cfg job`, and per-app `--help` pages."""

from __future__ import annotations

import yaml

from tests.conftest import run_cli


def test_cfg_job_prints_nothing_but_the_config_yaml(tmp_path):
    done = run_cli("retina_seg.run", ["--cfg", "job", "backbone=resnet18"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    config = yaml.safe_load(done.stdout)
    assert config["backbone"]["name"] == "resnet18" and config["verbose"] is False
    assert "oneDNN" not in done.stderr and "cuda" not in done.stderr


def test_evaluate_help_lists_its_own_options_and_not_the_training_config(tmp_path):
    done = run_cli("retina_seg.evaluate", ["--help"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("python -m retina_seg.evaluate run_id=<id>")
    assert "run_id=null    the training run (required)" in done.stdout
    assert "inference.mode=whole" in done.stdout and "chase_db1, drive" in done.stdout
    for hidden in ("trainer.", "schema", "apps/", "hydra/", "== Config ==", "augmentation"):
        assert hidden not in done.stdout, hidden


def test_compare_help_is_its_own_page(tmp_path):
    done = run_cli("retina_seg.compare", ["--help", "metric=test_auc"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "metric=test_auc    sort key" in done.stdout and "tracking=<name>   where the runs live: local, server" in (
        done.stdout)
    assert "backbone" not in done.stdout and "schema" not in done.stdout
