"""`python -m retina_seg.promote`: the best run of a sweep becomes a registered version under alias `champion`
in a real SQLite store, and the folder `retina-seg-serve models:/<name>@champion` serves answers as that run does."""

from __future__ import annotations

import base64

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from retina_seg.run import run_job
from retina_seg.serve.__main__ import ServeError, model_folder, registered
from tests.conftest import TINY, compose_config, isolate, run_cli
from tests.serve.conftest import SWEEP


def test_promote_registers_the_best_run_of_a_sweep_as_champion(logged, tmp_path):
    tmp, first, inputs = logged
    uri = f"sqlite:///{tmp}/mlflow.db"
    # a second job of the same sweep, trained differently, so that the choice means something
    second = run_job(compose_config([*TINY, *isolate(tmp), "seed=7", "trainer.lr=0.01"]), tmp_path / "work",
                     {"sweep_id": SWEEP, "sweep_job": "1"})
    client = MlflowClient(uri)
    scores = {r: client.get_run(r).data.metrics["val_f1"] for r in (first.run_id, second.run_id)}
    best = max(scores, key=scores.get)
    for round_ in (1, 2):  # promoting again adds a version and moves the alias
        done = run_cli("retina_seg.promote", [f"sweep={SWEEP}", "metric=val_f1", f"tracking.uri={uri}"],
                       tmp_path / f"promote{round_}")
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"version {round_} is run {best}" in done.stdout
    champion = client.get_model_version_by_alias("retina-seg", "champion")
    assert str(champion.version) == "2" and champion.run_id == best
    assert float(champion.tags["val_f1"]) == scores[best] == max(scores.values())

    mlflow.set_tracking_uri(uri)
    photo = base64.b64encode((inputs / "colour.png").read_bytes()).decode()
    # the folder `retina-seg-serve models:/retina-seg@champion` serves: the version the alias names at its start
    assert registered("models:/retina-seg@champion") == ("models:/retina-seg/2", "retina-seg", "2")
    with pytest.raises(ServeError, match=r"^models:/retina-seg@nobody: .*nobody") as refused:
        registered("models:/retina-seg@nobody")
    assert "\n" not in str(refused.value)
    folder = model_folder("models:/retina-seg/2", str(tmp_path / "downloads"))
    served = mlflow.pyfunc.load_model(folder).predict(pd.DataFrame({"image": [photo]}))
    direct = mlflow.pyfunc.load_model(f"runs:/{best}/model").predict(pd.DataFrame({"image": [photo]}))
    decode = lambda text: cv2.imdecode(np.frombuffer(base64.b64decode(text), np.uint8), cv2.IMREAD_UNCHANGED)  # noqa: E731
    np.testing.assert_array_equal(decode(served["mask"][0]), decode(direct["mask"][0]))


def test_promote_without_candidates_says_so(logged, tmp_path):
    tmp, _, _ = logged
    done = run_cli("retina_seg.promote", ["sweep=no-such-sweep", f"tracking.uri=sqlite:///{tmp}/mlflow.db"], tmp_path)
    assert done.returncode == 2
    assert "error: sweep='no-such-sweep': no run carries this sweep id" in done.stderr
    done = run_cli("retina_seg.promote", [f"sweep={SWEEP}", "metric=no_such_metric",
                                          f"tracking.uri=sqlite:///{tmp}/mlflow.db"], tmp_path / "b")
    assert done.returncode == 2 and "is FINISHED with metric 'no_such_metric'" in done.stderr
