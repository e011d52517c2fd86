"""One tiny trained run shared by the serving, promotion and export tests (it trains once per session)."""

from __future__ import annotations

import cv2
import pytest

from retina_seg.config import validate
from retina_seg.predict import predict_folder
from retina_seg.run import run_job
from tests.conftest import TINY, compose_config, isolate

SWEEP = "serve-tests"
# a synthetic fundus photograph as real files in every accepted format (distinct stems: predict names outputs by stem)
FORMATS = {"colour.png": None, "photo.jpg": None, "scan.tif": None, "grey.png": cv2.COLOR_BGR2GRAY,
           "rgba.png": cv2.COLOR_BGR2BGRA}


@pytest.fixture(scope="session")
def logged(tmp_path_factory):
    """(folder, JobResult, inputs folder): one tiny run tagged as job 0 of sweep SWEEP, image files at 150x130,
    and what `predict` wrote for them in folder/predicted."""
    tmp = tmp_path_factory.mktemp("served")
    result = run_job(compose_config([*TINY, *isolate(tmp)]), tmp / "work", {"sweep_id": SWEEP, "sweep_job": "0"})
    photo = cv2.imread(str(sorted((tmp / "cache").glob("*/images/*.png"))[0]))
    photo = cv2.resize(photo, (150, 130), interpolation=cv2.INTER_LINEAR)
    inputs = tmp / "inputs"
    inputs.mkdir()
    for name, conversion in FORMATS.items():
        assert cv2.imwrite(str(inputs / name), photo if conversion is None else cv2.cvtColor(photo, conversion))
    config = validate(compose_config([*isolate(tmp), f"run_id={result.run_id}", f"input={inputs}",
                                      f"output={tmp / 'predicted'}"], name="predict"))
    predict_folder(config)
    return tmp, result, inputs
