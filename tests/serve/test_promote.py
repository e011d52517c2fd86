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

from retina_seg.config import ConfigError, PromoteConfig, TrackingConfig
from retina_seg.run import run_job
from retina_seg.serve.__main__ import ServeError, model_folder, registered
from retina_seg.serve.registry import best_run
from tests.conftest import TINY, compose_config, isolate, run_cli
from tests.serve.conftest import SWEEP

pytestmark = pytest.mark.slow  # end-to-end: left out of make test-fast


def store(tmp):
    """The shared run's store and experiment, as the command line names them."""
    return [f"tracking.uri=sqlite:///{tmp}/mlflow.db", "tracking.experiment=test"]


def test_promote_registers_the_best_run_of_a_sweep_as_champion(logged, tmp_path):
    tmp, first, inputs = logged
    uri = f"sqlite:///{tmp}/mlflow.db"
    # a second job of the same sweep, trained differently, so that the choice means something
    second = run_job(compose_config([*TINY, *isolate(tmp), "seed=7", "trainer.lr=0.01"]), tmp_path / "work",
                     {"sweep_id": SWEEP, "sweep_job": "1"})
    client = MlflowClient(uri)
    scores = {r: client.get_run(r).data.metrics["val_f1"] for r in (first.run_id, second.run_id)}
    best, other = sorted(scores, key=scores.get, reverse=True)
    assert scores[best] > scores[other], scores  # two different scores: promote has a choice to get right
    for round_ in (1, 2):  # promoting again adds a version and moves the alias
        done = run_cli("retina_seg.promote", [f"sweep={SWEEP}", "metric=val_f1", *store(tmp)],
                       tmp_path / f"promote{round_}")
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"version {round_} is run {best}" in done.stdout
    champion = client.get_model_version_by_alias("retina-seg", "champion")
    assert str(champion.version) == "2" and champion.run_id == best
    assert float(champion.tags["val_f1"]) == scores[best]

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
    done = run_cli("retina_seg.promote", ["sweep=no-such-sweep", *store(tmp)], tmp_path)
    assert done.returncode == 2
    assert (f"error: sweep='no-such-sweep': no run carries this sweep id in experiment 'test' of sqlite:///{tmp}/"
            "mlflow.db") in done.stderr
    done = run_cli("retina_seg.promote", [f"sweep={SWEEP}", "metric=no_such_metric", *store(tmp)], tmp_path / "b")
    assert done.returncode == 2 and "is FINISHED with metric 'no_such_metric'" in done.stderr


def test_promote_searches_only_its_own_experiment_and_quotes_the_sweep_id(logged, tmp_path):
    """Sweep ids are folder date-times: another user's experiment on the same server may hold the same one (here
    with a run that scores higher), and an id may hold a quote."""
    tmp, first, _ = logged
    elsewhere = [o for o in isolate(tmp) if not o.startswith("tracking.experiment=")] + ["tracking.experiment=bob"]
    other = run_job(compose_config([*TINY, *elsewhere]), tmp_path / "work", {"sweep_id": SWEEP, "sweep_job": "0"})
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    client.log_metric(other.run_id, "val_f1", 1.0)  # better than any run of ours: it must not be a candidate
    ours = PromoteConfig(tracking=TrackingConfig(uri=f"sqlite:///{tmp}/mlflow.db", experiment="test"), sweep=SWEEP)
    run, _ = best_run(client, ours)
    assert run.info.experiment_id == client.get_experiment_by_name("test").experiment_id
    assert run.info.run_id != other.run_id
    theirs = PromoteConfig(tracking=TrackingConfig(uri=ours.tracking.uri, experiment="bob"), sweep=SWEEP)
    assert best_run(client, theirs)[0].info.run_id == other.run_id
    client.set_tag(other.run_id, "sweep_id", "bob's sweep")
    quoted = PromoteConfig(tracking=theirs.tracking, sweep="bob's sweep")
    assert best_run(client, quoted)[0].info.run_id == other.run_id
    with pytest.raises(ConfigError, match=r"cannot be searched for: MLflow filters cannot quote a value holding both"):
        best_run(client, PromoteConfig(tracking=theirs.tracking, sweep="it's \"x\""))
