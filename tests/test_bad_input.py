"""Bad input through the real command line: one clear line, exit code 2 (Hydra's own composition errors
included), and no run left RUNNING."""

from __future__ import annotations

import pytest

from tests.conftest import TINY, isolate, run_cli, runs_in

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
