"""`retina-seg-serve` set up as a hospital's IT would run it, for real: HTTPS with a certificate from the hospital's
own authority (a throw-away one here), API keys, `/metrics` behind a key, two workers, the access log, and a real
Prometheus scraping it with the example config in deploy/prometheus. One server serves the whole module; stopped
with SIGTERM it exits 143 and leaves nothing behind."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from retina_seg.config import PROJECT_ROOT
from retina_seg.serve.keys import add_key
from retina_seg.tracking import artifacts
from tests.conftest import free_port, stop_group, system_program, wait_until_up
from tests.serve.certificates import Certificates, make_certificates

pytestmark = pytest.mark.slow  # end-to-end: left out of make test-fast

BIN = Path(sys.executable).parent
DEPLOY = PROJECT_ROOT / "deploy" / "prometheus"


@dataclass
class Server:
    port: int
    certificates: Certificates
    keys: dict  # name -> key
    access_log: Path
    log: Path
    temp: Path  # the server's TMPDIR
    process: subprocess.Popen

    @property
    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.certificates.authority))

    def request(self, method: str, path: str, body: bytes | None = None, key: str | None = None,
                headers: dict | None = None) -> tuple[int, dict, bytes]:
        """(status, headers, body) of one HTTPS request trusting the test authority."""
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=120, context=self.context)
        sent = {**({"Content-Type": "application/json"} if body is not None else {}),
                **({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
        try:
            connection.request(method, path, body=body, headers=sent)
            answer = connection.getresponse()
            return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
        finally:
            connection.close()

    def metrics(self) -> dict:
        """(name, labels as a sorted tuple) -> value of every sample at /metrics."""
        status, _, body = self.request("GET", "/metrics", key=self.keys["prometheus"])
        assert status == 200, body
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def request_for(path: Path) -> bytes:
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": [[encoded]]}}).encode()


@pytest.fixture(scope="module")
def server(logged, tmp_path_factory):
    tmp, result, _ = logged
    folder = tmp_path_factory.mktemp("deployed")
    certificates = make_certificates(folder / "tls")
    keys = {name: add_key(name, folder / "keys") for name in ("clinic-a", "prometheus")}
    temp = folder / "temp"
    temp.mkdir()
    port, log_path = free_port(), folder / "server.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "TMPDIR": str(temp)}
    command = [str(BIN / "retina-seg-serve"), f"runs:/{result.run_id}/model", "--host", "127.0.0.1", "--port",
               str(port), "--workers", "2", "--api-keys", str(folder / "keys"), "--metrics-need-key",
               "--ssl-certfile", str(certificates.certificate), "--ssl-keyfile", str(certificates.key),
               "--access-log", str(folder / "access.log"), "--timeout", "30"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deployed = Server(port, certificates, keys, folder / "access.log", log_path, temp, process)
    try:
        wait_until_up(process, f"https://127.0.0.1:{port}/ping", log_path, 240, deployed.context)
        deadline = time.time() + 240  # the first worker answers while the second still loads the model
        while log_path.read_text().count("Application startup complete.") < 2:
            assert time.time() < deadline and process.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.5)
        yield deployed
    finally:
        children = psutil.Process(process.pid).children(recursive=True) if process.poll() is None else []
        stop_group(process)
    assert process.returncode == 143, log_path.read_text()[-3000:]
    assert not list(temp.iterdir()), list(temp.rglob("*"))  # the model, the metrics folder, the workers' files
    _, alive = psutil.wait_procs(children, timeout=10)  # the workers and multiprocessing's resource tracker
    assert not [p.cmdline() for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def predicted_mask(tmp: Path) -> np.ndarray:
    return cv2.imread(str(tmp / "predicted" / "colour_mask.png"), cv2.IMREAD_UNCHANGED)


def decoded(text: str) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(base64.b64decode(text), np.uint8), cv2.IMREAD_UNCHANGED)


def test_invocations_need_a_known_key_and_ping_health_and_the_card_stay_open(logged, server):
    tmp, _, inputs = logged
    body = request_for(inputs / "colour.png")
    for path in ("/ping", "/health"):
        assert server.request("GET", path)[0] == 200, path
    status, headers, card = server.request("GET", "/model-card")
    assert status == 200 and headers["content-type"] == "text/markdown; charset=utf-8"
    assert card.decode() == (tmp / "work" / "artifacts" / artifacts.MODEL_CARD).read_text()

    wrong = "rsk_" + "A" * 43
    cases = {"no key": (None, {}, 401, "UNAUTHENTICATED",
                        "/invocations needs an API key: send the header 'Authorization: Bearer <key>'"),
             "not a bearer key": (None, {"Authorization": f"Basic {wrong}"}, 401, "UNAUTHENTICATED",
                                  "/invocations needs an API key: send the header 'Authorization: Bearer <key>'"),
             "unknown key": (wrong, {}, 403, "PERMISSION_DENIED", "the API key is not one this server accepts")}
    for case, (key, headers, expected, code, message) in cases.items():
        status, answer_headers, answer = server.request("POST", "/invocations", body, key, headers)
        assert status == expected, (case, answer)
        assert answer == json.dumps({"error_code": code, "message": message}).encode(), case
        assert (answer_headers.get("www-authenticate") == 'Bearer realm="retina-seg"') == (expected == 401), case
        status, _, good = server.request("POST", "/invocations", body, server.keys["clinic-a"])
        assert status == 200, (case, good[:300])
        np.testing.assert_array_equal(decoded(json.loads(good)["predictions"][0]["mask"]), predicted_mask(tmp))
    # a large body without a key gets its answer too (read to its end, not kept), not a reset connection
    status, _, answer = server.request("POST", "/invocations", b'{"x": "' + b"A" * (8 * 2**20) + b'"}')
    assert status == 401 and json.loads(answer)["error_code"] == "UNAUTHENTICATED"
    # /metrics was asked to need a key as well
    assert server.request("GET", "/metrics")[0] == 401
    assert server.request("GET", "/metrics", key=wrong)[0] == 403


def test_tls_answers_a_client_that_trusts_the_authority_and_no_plain_http(server):
    assert server.request("GET", "/ping")[0] == 200
    untrusting = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=30,
                                             context=ssl.create_default_context())
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
        untrusting.request("GET", "/ping")
    untrusting.close()
    plain = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    # the TLS handshake fails on the plain request's first bytes: the connection closes without an HTTP answer
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        plain.request("GET", "/ping")
        plain.getresponse()
    plain.close()
    assert server.request("GET", "/health")[0] == 200  # and the server goes on


def test_every_request_leaves_one_json_line_with_its_request_id_and_key_name_only(logged, server):
    _, _, inputs = logged
    body = request_for(inputs / "colour.png")
    status, headers, _ = server.request("POST", "/invocations", body, server.keys["clinic-a"],
                                        {"X-Request-ID": "trace-42"})
    assert status == 200 and headers["x-request-id"] == "trace-42"
    status, headers, _ = server.request("POST", "/invocations", body, headers={"X-Request-ID": "a b\tc"})
    assert status == 401 and re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])  # not echoed: a new one
    fresh = headers["x-request-id"]
    time.sleep(0.5)
    lines = [json.loads(line) for line in server.access_log.read_text().splitlines()]
    assert all(set(line) == {"time", "request_id", "method", "route", "status", "seconds", "body_bytes", "key",
                             "refused"} for line in lines)
    [traced] = [line for line in lines if line["request_id"] == "trace-42"]
    assert (traced["method"], traced["route"], traced["status"], traced["key"], traced["refused"]) == (
        "POST", "/invocations", 200, "clinic-a", None)
    assert traced["body_bytes"] == len(body) and 0 < traced["seconds"] < 120
    assert traced["time"].endswith("+00:00")
    [refused] = [line for line in lines if line["request_id"] == fresh]
    assert (refused["status"], refused["key"], refused["refused"]) == (401, None, "unauthenticated")
    written = server.access_log.read_text() + server.log.read_text()
    for secret in (*server.keys.values(), body[40:120].decode()):  # neither a key nor any part of an image
        assert secret not in written


def worker_counts(server: Server) -> dict:
    """pid -> the /ping requests that worker counted, read from its own file in the server's metrics folder."""
    [folder] = server.temp.glob("retina-seg-serve-*/metrics")
    counts = {}
    for path in folder.glob("counter_*.db"):
        counts[int(path.stem.split("_")[1])] = sum(
            value for key, value, *_ in MmapedDict.read_all_values_from_file(str(path))
            if '"retina_seg_requests_total"' in key and '"route": "/ping"' in key)
    return counts


def test_two_workers_each_answer_and_every_one_reports_the_sum_at_metrics(server):
    workers = [child for child in psutil.Process(server.process.pid).children()
               if "multiprocessing.spawn" in " ".join(child.cmdline())]
    assert len(workers) == 2
    for _ in range(40):  # a new connection each: the two processes take turns at the shared socket
        assert server.request("GET", "/ping")[0] == 200
    counts = worker_counts(server)
    assert set(counts) == {w.pid for w in workers} and all(count > 0 for count in counts.values()), counts
    key = ("retina_seg_requests_total", (("key", ""), ("method", "GET"), ("route", "/ping"), ("status", "200")))
    for _ in range(4):  # whichever worker answers /metrics, it answers the sum over both
        assert server.metrics()[key] == sum(counts.values())


def test_model_info_and_drift_figures_of_a_validation_image_match_training(logged, server):
    tmp, result, _ = logged
    staging = tmp / "work" / "artifacts"
    stored = json.loads((staging / artifacts.VALIDATION_STATISTICS).read_text())
    before = server.metrics()
    assert before[("retina_seg_model_info", (("classes", "vessels"), ("name", ""), ("precision", "32"),
                                             ("run_id", result.run_id), ("version", "")))] == 1
    expected = stored["summary"]
    for statistic, value in expected["foreground_fraction"]["vessels"].items():
        labels = (("class", "vessels"), ("statistic", statistic))
        assert before[("retina_seg_validation_foreground_fraction", labels)] == pytest.approx(value)
    assert before[("retina_seg_validation_images", ())] == expected["images"]
    # the validation photograph itself, served: its live figures are the ones stored at training time
    [image] = stored["images"]
    [photo] = (tmp / "cache").glob(f"*/images/{image['image']}.png")
    status, _, _ = server.request("POST", "/invocations", request_for(photo), server.keys["clinic-a"])
    assert status == 200
    after = server.metrics()

    def grew(name: str, labels: tuple = ()) -> float:
        return after[(name, labels)] - before.get((name, labels), 0.0)

    assert grew("retina_seg_fov_fraction_count") == 1
    assert grew("retina_seg_fov_fraction_sum") == pytest.approx(image["fov_fraction"], rel=1e-6)
    assert grew("retina_seg_foreground_fraction_sum", (("class", "vessels"),)) == pytest.approx(
        image["foreground_fraction"]["vessels"], rel=1e-6)
    assert grew("retina_seg_model_seconds_count") == 1 and grew("retina_seg_model_seconds_sum") > 0


def substituted(text: str, server: Server, folder: Path) -> str:
    """The example scrape config with this test's port, files and a 1 s interval."""
    (folder / "retina-seg.key").write_text(server.keys["prometheus"])
    for old, new in (("127.0.0.1:5001", f"127.0.0.1:{server.port}"), ("15s", "1s"),
                     ("/etc/prometheus/retina-seg-ca.pem", str(server.certificates.authority)),
                     ("/etc/prometheus/retina-seg.key", str(folder / "retina-seg.key"))):
        assert old in text, old
        text = text.replace(old, new)
    return text


def query(port: int, promql: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as answer:
        reply = json.loads(answer.read())
    assert reply["status"] == "success", reply
    return reply["data"]["result"]


def test_a_real_prometheus_scrapes_the_server_with_the_example_config(logged, server, tmp_path):
    _, _, inputs = logged
    prometheus, promtool = system_program("prometheus", "prometheus"), system_program("promtool", "prometheus")
    for name in ("retina-seg-rules.yml", "retina-seg-rules.test.yml"):
        shutil.copy(DEPLOY / name, tmp_path)
    config = tmp_path / "prometheus.yml"
    config.write_text(substituted((DEPLOY / "prometheus.yml").read_text(), server, tmp_path))
    for check in (["check", "config", str(config)], ["check", "rules", str(tmp_path / "retina-seg-rules.yml")],
                  ["test", "rules", str(tmp_path / "retina-seg-rules.test.yml")]):
        done = subprocess.run([promtool, *check], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "SUCCESS" in done.stdout, (check, done.stdout, done.stderr)

    port = free_port()
    with open(tmp_path / "prometheus.log", "w") as log:
        process = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                                    f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_until_up(process, f"http://127.0.0.1:{port}/-/ready", tmp_path / "prometheus.log", 60)
        answered = [server.request("POST", "/invocations", request_for(inputs / "colour.png"), server.keys["clinic-a"],
                                   {"X-Request-ID": f"prometheus-{k}"})[0] for k in range(2)]
        assert answered == [200, 200]
        total = sum(1 for line in server.access_log.read_text().splitlines()
                    if '"/invocations"' in line and '"status": 200' in line and '"clinic-a"' in line)
        promql = 'sum(retina_seg_requests_total{route="/invocations",status="200",key="clinic-a"})'
        deadline, found = time.time() + 60, []
        while time.time() < deadline:
            found = query(port, promql)
            if found and float(found[0]["value"][1]) == total:
                break
            time.sleep(1)
        assert found and float(found[0]["value"][1]) == total, (found, total)
        [up] = query(port, 'up{job="retina-seg"}')
        assert up["value"][1] == "1"
        deadline, health = time.time() + 30, {}
        while time.time() < deadline and set(health.values()) != {"ok"}:  # both rules evaluated without error
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=10) as answer:
                health = {rule["name"]: rule["health"] for group in json.loads(answer.read())["data"]["groups"]
                          for rule in group["rules"]}
            time.sleep(1)
        assert health == {"retina_seg:foreground_fraction:median1h": "ok",
                          "RetinaSegForegroundOutsideValidationRange": "ok"}, health
    finally:
        stop_group(process)
    # Prometheus sent the key it was given, over TLS: the access log names it
    assert '"route": "/metrics", "status": 200' in server.access_log.read_text()
    assert any(json.loads(line)["key"] == "prometheus" for line in server.access_log.read_text().splitlines()
               if '"/metrics"' in line)
