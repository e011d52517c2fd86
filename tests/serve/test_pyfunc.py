"""The logged MLflow model is the whole inference path: in process and over REST it answers with `predict`'s
masks, pixel for pixel, and a bad request gets HTTP 400 with a one-line reason."""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import h5py
import mlflow
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from mlflow.pyfunc import PythonModelContext
from prometheus_client.parser import text_string_to_metric_families

from retina_seg.serve.pyfunc import RetinaSegModel
from retina_seg.tracking.reload import ModelSourceError
from tests.conftest import free_port, stop_group, wait_until_up
from tests.serve.conftest import FORMATS

pytestmark = pytest.mark.slow  # end-to-end: left out of make test-fast


def predicted(tmp: Path, name: str, kind: str = "mask") -> np.ndarray:
    return cv2.imread(str(tmp / "predicted" / f"{name.split('.')[0]}_{kind}.png"), cv2.IMREAD_UNCHANGED)


def encoded(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def decoded(text: str) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(base64.b64decode(text), np.uint8), cv2.IMREAD_UNCHANGED)


def test_logged_model_carries_signature_example_and_weights_without_optimizer(logged):
    tmp, result, _ = logged
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    folder = Path(mlflow.artifacts.download_artifacts(f"runs:/{result.run_id}/model", dst_path=str(tmp / "dl")))
    info = mlflow.models.get_model_info(f"runs:/{result.run_id}/model")
    assert [c["name"] for c in info.signature.inputs.to_dict()] == ["image"]
    assert {p.name for p in info.signature.params.params} == {"threshold", "return_probabilities", "return_image"}
    assert (folder / "input_example.json").is_file() and (folder / "serving_input_example.json").is_file()
    assert not list(folder.rglob("*.pkl")), "the model directory must not hold pickles"
    with h5py.File(next(folder.rglob("resnet18_Retinal.h5")), "r") as weights:
        assert "optimizer_weights" not in weights and len(weights.keys()) > 10


def test_pyfunc_masks_equal_predict_pixel_for_pixel(logged):
    tmp, result, inputs = logged
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    names = list(FORMATS)
    answer = model.predict(pd.DataFrame({"image": [encoded(inputs / n) for n in names]}),
                           params={"return_probabilities": True})
    assert list(answer["height"]) == [130] * 5 and list(answer["width"]) == [150] * 5
    assert list(answer["scale"]) == [1.0] * 5  # predict wrote these files at the same scale
    for name, row in zip(names, answer.itertuples(), strict=True):
        mask = decoded(row.mask)
        assert mask.shape == (130, 150) and set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(mask, predicted(tmp, name), err_msg=name)
        prob = decoded(row.probabilities)
        assert prob.dtype == np.uint16
        assert np.abs(prob / 65535 - predicted(tmp, name, "prob") / 255).max() <= 0.5 / 255 + 1e-6
        assert row.area == np.count_nonzero(mask) and row.fov_share == row.area / row.fov_area, name
        assert not hasattr(row, "regions"), "a vessel model counts no regions"
    assert predicted(tmp, "colour.png").any(), "an all-black mask would prove nothing"
    # return_image: the photograph as the model read it (here a TIFF, which browsers cannot show)
    read = model.predict(pd.DataFrame({"image": [encoded(inputs / "scan.tif")]}), params={"return_image": True})
    np.testing.assert_array_equal(decoded(read["image"][0]), cv2.imread(str(inputs / "scan.tif")))
    everything = model.predict(pd.DataFrame({"image": [encoded(inputs / "colour.png")]}), params={"threshold": 0.0})
    np.testing.assert_array_equal(decoded(everything["mask"][0]) > 0, predicted(tmp, "colour.png", "prob") >= 0)


def test_served_model_refuses_code_carrying_layers_unless_trusted(logged, tmp_path):
    tmp, _, _ = logged
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(tmp / "work" / "artifacts" / "config.yaml", folder)
    inputs = tf.keras.Input((None, None, 3))
    model = tf.keras.Model(inputs, tf.keras.layers.Lambda(lambda x: x[..., :1] * 0.5)(inputs))
    (folder / "resnet18_Retinal.json").write_text(model.to_json())
    model.save_weights(str(folder / "resnet18_Retinal.h5"))
    with pytest.raises(ModelSourceError, match=r"contains \['Lambda \(own function\)'\], which no retina-seg "
                                               "architecture produces"):
        RetinaSegModel().load_context(PythonModelContext({"run": str(folder)}, {"trust_model": False}))
    trusted = RetinaSegModel()
    trusted.load_context(PythonModelContext({"run": str(folder)}, {"trust_model": True}))
    assert trusted.segmenter.predictor.model.output_shape == (None, None, None, 1)


# --- over REST: the two real servers, each started once for the whole suite ---

BIN = Path(sys.executable).parent  # uvicorn, which `mlflow models serve` runs, and the console scripts live here
MLFLOW, RETINA_SEG = "mlflow models serve", "retina-seg-serve"
TIMEOUT = 10  # seconds each server gives a request (MLflow's default, 60, would make the slow-body test slow)
COMMANDS = {MLFLOW: lambda uri, port: [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager",
                                       "local", "-h", "127.0.0.1", "-p", str(port), "-t", str(TIMEOUT)],
            RETINA_SEG: lambda uri, port: [str(BIN / "retina-seg-serve"), uri, "--host", "127.0.0.1", "--port",
                                           str(port), "--timeout", str(TIMEOUT)]}


@pytest.fixture(scope="module", params=[MLFLOW, RETINA_SEG])
def server(request, logged):
    """(kind, url, log): the real server serving runs:/<id>/model on 127.0.0.1, in its own process group."""
    tmp, result, _ = logged
    port = free_port()
    temp = tmp / f"temp-{request.param.split()[0]}"  # where the server downloads the model
    temp.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "TMPDIR": str(temp),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    log_path = tmp / f"server-{request.param.split()[0]}.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(COMMANDS[request.param](f"runs:/{result.run_id}/model", port), stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(proc, f"{url}/ping", log_path, seconds=180)
        yield request.param, url, log_path
    finally:
        stop_group(proc)
        log.close()
    if request.param == RETINA_SEG:  # stopped with SIGTERM, it removed the model it downloaded
        assert proc.returncode == 143 and not list(temp.iterdir()), (proc.returncode, list(temp.iterdir()))


def post(url: str, body: bytes, content_type: str | None = "application/json") -> tuple[int, dict]:
    """(HTTP status, JSON answer); http.client, since urllib would add a Content-Type of its own."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        connection.request("POST", "/invocations", body=body,
                           headers={"Content-Type": content_type} if content_type else {})
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read() or b"{}")
    finally:
        connection.close()


def request_for(*images: str, **params) -> bytes:
    body = {"dataframe_split": {"columns": ["image"], "data": [[text] for text in images]}}
    return json.dumps({**body, **({"params": params} if params else {})}).encode()


def test_rest_server_answers_with_predicts_masks(logged, server):
    tmp, _, inputs = logged
    _, url, _ = server
    names = list(FORMATS)
    status, answer = post(url, request_for(*(encoded(inputs / n) for n in names)))
    assert status == 200, answer
    rows = answer["predictions"]
    assert [(r["height"], r["width"]) for r in rows] == [(130, 150)] * 5 and "probabilities" not in rows[0]
    for name, row in zip(names, rows, strict=True):
        np.testing.assert_array_equal(decoded(row["mask"]), predicted(tmp, name), err_msg=name)


def bad_requests(inputs: Path, kind: str) -> dict:
    """case -> (body, HTTP status, reason the one-line message holds)."""
    png = (inputs / "colour.png").read_bytes()
    tiny = cv2.imencode(".png", np.full((10, 10, 3), 128, np.uint8))[1].tobytes()
    text = base64.b64encode
    refused_by_the_model = {
        "not an image": (request_for(text(b"just some text, not an image file").decode()), 400, "not an image file"),
        "truncated file": (request_for(text(png[: len(png) // 2]).decode()), 400, "truncated or corrupt"),
        "not base64": (request_for("%%% not base64 %%%"), 400, "not base64"),
        "missing image column": (json.dumps({"dataframe_split": {"columns": ["picture"],
                                                                 "data": [[text(png).decode()]]}}).encode(),
                                 400, "no 'image' column"),
        "10x10 image": (request_for(text(tiny).decode()), 400, "is 10x10: each side must be between 32"),
        "bad threshold": (request_for(text(png).decode(), threshold=1.5), 400, "params.threshold=1.5"),
        "22 MB file": (request_for("A" * (30 * 2**20)), 400, "the limit is 20 MB"),
    }
    if kind == MLFLOW:  # MLflow's own parser, whose message goes on to echo the body: its first line is the reason
        return {**refused_by_the_model, "empty body": (b"", 400, "Ensure that input is a valid JSON"),
                "100 MB body": (request_for("A" * (100 * 2**20)), 400, "the limit is 20 MB")}
    return {**refused_by_the_model, "empty body": (b"", 400, "the request body is empty: expected JSON"),
            "not JSON": (b'{"dataframe_split": [', 400, "the request body is not JSON (Expecting value"),
            "no Content-Type": (request_for(text(png).decode()), 415, "the request has no Content-Type"),
            "100 MB body": (request_for("A" * (100 * 2**20)), 413, "the request body is 100.0 MB: the limit is 32 MB")}


def test_bad_requests_get_4xx_with_one_line_and_the_server_goes_on(logged, server):
    tmp, _, inputs = logged
    kind, url, server_log = server
    good = request_for(encoded(inputs / "colour.png"))
    for case, (body, expected_status, reason) in bad_requests(inputs, kind).items():
        status, answer = post(url, body, None if case == "no Content-Type" else "application/json")
        assert status == expected_status, (case, status, str(answer)[:500])
        message = answer.get("message", "")
        one_line = message.splitlines()[0] if (kind, case) == (MLFLOW, "empty body") else message
        assert reason in one_line and "\n" not in one_line, (case, message[:500])
        status, answer = post(url, good)
        assert status == 200, (case, answer)
        np.testing.assert_array_equal(decoded(answer["predictions"][0]["mask"]), predicted(tmp, "colour.png"))
    # what was posted never reaches the server's log
    assert encoded(inputs / "colour.png")[:40] not in server_log.read_text()


def test_a_body_that_never_arrives_times_out_and_the_server_goes_on(logged, server):
    """A client that announces 1000 bytes and sends 18 holds a connection: MLflow's own timeout answers
    504 once it gave up on the whole request, the guard 408 once it gave up waiting for the body."""
    tmp, _, inputs = logged
    kind, url, _ = server
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=6 * TIMEOUT) as connection:
        connection.sendall(b"POST /invocations HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 1000\r\n\r\n{\"dataframe_split\"")
        status_line = connection.recv(65536).split(b"\r\n")[0].decode()
    assert status_line.split()[1] == {MLFLOW: "504", RETINA_SEG: "408"}[kind], status_line
    status, answer = post(url, request_for(encoded(inputs / "colour.png")))
    assert status == 200
    np.testing.assert_array_equal(decoded(answer["predictions"][0]["mask"]), predicted(tmp, "colour.png"))


REFUSED_FOR = {"not an image": "not_an_image", "truncated file": "truncated", "not base64": "not_an_image",
               "missing image column": "not_an_image", "10x10 image": "bad_size", "bad threshold": "bad_parameter",
               "22 MB file": "too_large", "empty body": "not_json", "not JSON": "not_json",
               "no Content-Type": "not_json", "100 MB body": "too_large"}


def scraped(url: str) -> tuple[int, dict]:
    """(HTTP status of GET /metrics, refused requests by reason)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=30) as answer:
            text = answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, {}
    return 200, {s.labels["reason"]: s.value for family in text_string_to_metric_families(text)
                 for s in family.samples if s.name == "retina_seg_refused_requests_total"}


def test_each_refusal_is_counted_by_its_reason_at_metrics(logged, server):
    _, _, inputs = logged
    kind, url, server_log = server
    status, before = scraped(url)
    if kind == MLFLOW:
        assert status == 404  # MLflow's own scoring server has no /metrics
        return
    assert status == 200
    cases = bad_requests(inputs, kind)
    assert set(cases) == set(REFUSED_FOR)
    for case, (body, expected_status, _) in cases.items():
        assert post(url, body, None if case == "no Content-Type" else "application/json")[0] == expected_status
    _, after = scraped(url)
    counted = {reason: after[reason] - before.get(reason, 0) for reason in after}
    expected = {reason: list(REFUSED_FOR.values()).count(reason) for reason in after}
    assert counted == expected
    # and each request left an access-log line on stdout, with its reason
    logged_reasons = {json.loads(line)["refused"] for line in server_log.read_text().splitlines()
                      if line.startswith('{"time"')}
    assert set(REFUSED_FOR.values()) <= logged_reasons
