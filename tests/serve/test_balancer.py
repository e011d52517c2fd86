"""Scaling past one process, the piece that runs on one machine: a real nginx (Debian's) with the example config
deploy/nginx/retina-seg.conf in front of two real `retina-seg-serve` instances on 127.0.0.1. Requests go round
robin, and when one instance is killed mid-test every request is still answered, by the other."""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from retina_seg.config import PROJECT_ROOT
from tests.conftest import free_port, stop_group, system_program, wait_until_up

pytestmark = pytest.mark.slow  # end-to-end: left out of make test-fast

BIN = Path(sys.executable).parent
EXAMPLE = PROJECT_ROOT / "deploy" / "nginx" / "retina-seg.conf"


@pytest.fixture(scope="module")
def instances(logged, tmp_path_factory):
    """Two servers of the same model, each with its own port and access log: [(process, port, access log)]."""
    tmp, result, _ = logged
    folder = tmp_path_factory.mktemp("balanced")
    started = []
    for k in range(2):
        port, log_path = free_port(), folder / f"server{k}.log"
        (folder / f"temp{k}").mkdir()  # a killed instance cannot remove its downloaded model: keep it in here
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "TMPDIR": str(folder / f"temp{k}")}
        with open(log_path, "w") as log:
            process = subprocess.Popen([str(BIN / "retina-seg-serve"), f"runs:/{result.run_id}/model",
                                        "--host", "127.0.0.1", "--port", str(port),
                                        "--access-log", str(folder / f"access{k}.log")],
                                       stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        started.append((process, port, folder / f"access{k}.log", log_path))
    try:
        for process, port, _, log_path in started:
            wait_until_up(process, f"http://127.0.0.1:{port}/ping", log_path, 240)
        yield [(process, port, access) for process, port, access, _ in started]
    finally:
        for process, *_ in started:
            if process.poll() is None:
                stop_group(process)


@pytest.fixture
def nginx(instances):
    """nginx on a free port with the example config included in its http block, in a folder its workers (user
    nobody when started as root) can reach: its URL."""
    program = system_program("nginx", "nginx")
    prefix = Path(tempfile.mkdtemp(prefix="retina-seg-nginx-"))
    prefix.chmod(0o755)
    port = free_port()
    text = EXAMPLE.read_text()
    for old, new in (("127.0.0.1:5001", f"127.0.0.1:{instances[0][1]}"),
                     ("127.0.0.1:5002", f"127.0.0.1:{instances[1][1]}"), ("127.0.0.1:8080", f"127.0.0.1:{port}")):
        assert old in text, old
        text = text.replace(old, new)
    (prefix / "retina-seg.conf").write_text(text)
    temp_paths = " ".join(f"{kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi",
                                                                            "uwsgi", "scgi"))
    (prefix / "nginx.conf").write_text(
        f"worker_processes 1;\npid {prefix / 'nginx.pid'};\nevents {{ worker_connections 64; }}\n"
        f"http {{ access_log off; {temp_paths} include {prefix / 'retina-seg.conf'}; }}\n")
    with open(prefix / "nginx.log", "w") as log:
        process = subprocess.Popen([program, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c",
                                    str(prefix / "nginx.conf"), "-g", "daemon off;"], stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_up(process, f"http://127.0.0.1:{port}/ping", prefix / "error.log", 30)
        yield port
    finally:
        stop_group(process)
        shutil.rmtree(prefix, ignore_errors=True)


def post(port: int, body: bytes, request_id: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json",
                                                                       "X-Request-ID": request_id})
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


def answered_by(access_log: Path) -> list[str]:
    return [json.loads(line)["request_id"] for line in access_log.read_text().splitlines()
            if '"/invocations"' in line]


def test_nginx_balances_two_instances_and_answers_everything_when_one_is_killed(logged, instances, nginx):
    tmp, _, inputs = logged
    body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(
        (inputs / "colour.png").read_bytes()).decode("ascii")]]}}).encode()
    expected = cv2.imread(str(tmp / "predicted" / "colour_mask.png"), cv2.IMREAD_UNCHANGED)

    def check(status: int, answer: dict) -> None:
        assert status == 200, answer
        mask = cv2.imdecode(np.frombuffer(base64.b64decode(answer["predictions"][0]["mask"]), np.uint8),
                            cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(mask, expected)

    for k in range(6):
        check(*post(nginx, body, f"round-{k}"))
    deadline = time.time() + 10  # an instance writes its access line once the answer is sent: maybe after it arrived
    while sum(len(answered_by(access)) for _, _, access in instances) < 6 and time.time() < deadline:
        time.sleep(0.05)
    first, second = (answered_by(access) for _, _, access in instances)
    assert sorted(first + second) == [f"round-{k}" for k in range(6)] and len(first) == len(second) == 3

    # one client keeps posting while the first instance is killed (SIGKILL: no goodbye to a request in flight)
    answers = []

    def client():
        for k in range(12):
            answers.append(post(nginx, body, f"after-{k}"))

    thread = threading.Thread(target=client)
    thread.start()
    while len(answers) < 4 and thread.is_alive():
        time.sleep(0.01)
    victim = instances[0][0]
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    thread.join(timeout=600)
    assert len(answers) == 12
    for status, answer in answers:
        check(status, answer)
    survivor = answered_by(instances[1][2])
    assert {f"after-{k}" for k in range(4, 12)} <= set(survivor)
    # the balancer does not pass /metrics on: Prometheus scrapes each instance itself
    connection = http.client.HTTPConnection("127.0.0.1", nginx, timeout=30)
    connection.request("GET", "/metrics")
    answer = connection.getresponse()
    assert answer.status == 404 and json.loads(answer.read())["error_code"] == "ENDPOINT_NOT_FOUND"
