"""Bad input through the real command line: one clear line, exit code 2 (Hydra's own composition errors
included), and no run left RUNNING."""

from __future__ import annotations

import pytest

from tests.conftest import TINY, isolate, run_cli, runs_in

pytestmark = pytest.mark.slow  # end-to-end: left out of make test-fast

# one case per kind of failure (the other range checks are composed in process in test_config.py)
CASES = {
    "unknown backbone": (["backbone=resnet35"], "Could not find 'backbone/resnet35'"),
    "unknown key": (["trainer.epoch=3"], "Key 'epoch' not in 'TrainerConfig'"),
    "negative loss weight": (["loss.focal=-0.5"], "error: loss.focal=-0.5 is invalid: expected a finite weight >= 0"),
    "unreachable tracking": (["tracking.uri=http://127.0.0.1:9"],
                             "error: tracking.uri='http://127.0.0.1:9' is unreachable"),
    "imagenet offline": (["encoder_weights=imagenet"], "error: encoder_weights=imagenet: the resnet18 ImageNet weights "
                                                       "could not be downloaded (offline?)"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_fails_fast_with_one_line(case, tmp_path):
    overrides, expected = CASES[case]
    done = run_cli("retina_seg.run", [*TINY, *isolate(tmp_path), *overrides], tmp_path, timeout=300)
    assert done.returncode == 2  # Hydra's own composition errors included
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    if expected.startswith("error: "):
        [line] = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert len(line) < 400
    assert not [r for r in runs_in(tmp_path) if r.info.status == "RUNNING"]


def test_unknown_backbone_lists_the_valid_ones(tmp_path):
    done = run_cli("retina_seg.run", ["backbone=resnet35", *isolate(tmp_path)], tmp_path, timeout=300)
    for name in ("resnet34", "efficientnetb3", "mobilenetv2", "inceptionv3"):
        assert name in done.stderr


@pytest.mark.parametrize("experiment", ["idrid_lesions", "backbone_comparison"])  # one run, and a sweep
def test_trainer_fast_with_an_experiment_stops_before_any_work_and_names_debug_fast(experiment, tmp_path):
    """The experiment's trainer keys are merged after trainer=fast: the run stops and names the command that
    smoke-tests the recipe, before any data is read or any run is created."""
    overrides = [f"+experiment={experiment}", "trainer=fast", f"data.root={tmp_path}/nowhere", *isolate(tmp_path)[:2]]
    done = run_cli("retina_seg.run", overrides, tmp_path, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert f"trainer=fast with experiment={experiment}: the experiment's trainer.epochs=" in line
    assert "trainer.time_limit_minutes=" in line and "neither a smoke run nor the recipe" in line
    command = " ".join(["debug=fast" if o == "trainer=fast" else o.lstrip("+") for o in overrides])
    assert line.endswith(f"python -m retina_seg.run {command}")
    assert "Traceback" not in done.stderr and runs_in(tmp_path) == []
