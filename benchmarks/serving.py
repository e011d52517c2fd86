"""The serving half of `make bench`: is the REST server as fast as predicting in process?

For one CHASE_DB1 photograph and the default model (its architecture and inference settings; the
weights do not change the time), logged as the pyfunc model into a throw-away store: the in-process
time of the Segmenter (what `predict` runs per image), the time of one request to `retina-seg-serve`
(MLflow's scoring server behind the request guard) with one client, then p50/p95 latency, throughput
and errors with four concurrent clients over `seconds`, with `--workers 1` and with `--workers 2`, and the
request body size. Prints a table, served / in-process (target <= 1.3), 2 workers / 1 worker, and the
machine's load average around each load test (other work on the cores changes every figure).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
from omegaconf import OmegaConf

from retina_seg.config import Config
from retina_seg.data.loading import read_image
from retina_seg.model.factory import build_model
from retina_seg.serve.contract import IMAGE
from retina_seg.serve.pyfunc import log_pipeline_model
from retina_seg.tracking import artifacts
from retina_seg.tracking.reload import load_segmenter


def log_untrained(config: Config, cfg, example: np.ndarray, folder: Path) -> str:
    """The default network (random init) with the run files a real run writes, logged as a pyfunc; its run id."""
    files = folder / "run"
    (files / artifacts.SUMMARY).parent.mkdir(parents=True)
    model = build_model(config.backbone.name, config.arch, len(config.data.channels), config.image_size,
                        config.encoder_weights, config.batchnorm_momentum, config.preprocess.normalization)
    (files / artifacts.architecture(config.backbone.name)).write_text(model.to_json())
    model.save_weights(str(files / artifacts.weights(config.backbone.name)))
    (files / artifacts.CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (files / artifacts.SUMMARY).write_text(json.dumps({"threshold": 0.5}))
    mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
    with mlflow.start_run() as run:
        log_pipeline_model(files, config, example)
    return run.info.run_id


def start_server(run_id: str, folder: Path, workers: int = 1) -> tuple[subprocess.Popen, str]:
    """retina-seg-serve with `workers` processes, once every one of them has loaded the model."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db"}
    log = folder / f"server-{workers}.log"
    proc = subprocess.Popen([sys.executable, "-m", "retina_seg.serve", f"runs:/{run_id}/model", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", str(workers), "--access-log", os.devnull],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2):
                if log.read_text().count("Application startup complete.") >= workers:
                    return proc, url
        except OSError:
            pass
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGTERM)
    raise RuntimeError(f"retina-seg-serve did not start: {log.read_text()[-2000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)


def load_test(url: str, body: bytes, seconds: float) -> dict:
    """4 clients over `seconds` (after 4 clients' warm-up, which traces the model in every worker): latencies,
    throughput, errors and the 1-minute load average before and after."""
    concurrent(url, body, 4, min(seconds, 15))
    before = os.getloadavg()[0]
    latencies, errors, elapsed = concurrent(url, body, 4, seconds)
    p50, p95 = (np.percentile(latencies, [50, 95]) if latencies else (float("nan"),) * 2)
    return {"p50": p50, "p95": p95, "rate": len(latencies) / elapsed, "elapsed": elapsed, "errors": errors,
            "load": (before, os.getloadavg()[0])}


def post(url: str, body: bytes) -> float:
    """Seconds for one request; raises on anything but HTTP 200."""
    started = time.perf_counter()
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as answer:
        answer.read()
    return time.perf_counter() - started


def concurrent(url: str, body: bytes, clients: int, seconds: float) -> tuple[list, int, float]:
    """(latencies, errors, elapsed) of `clients` threads posting back to back for `seconds`."""
    latencies, errors, lock = [], [0], threading.Lock()
    stop = time.perf_counter() + seconds

    def client():
        while time.perf_counter() < stop:
            try:
                latency = post(url, body)
                with lock:
                    latencies.append(latency)
            except (OSError, urllib.error.HTTPError):
                with lock:
                    errors[0] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0], time.perf_counter() - started


def run_serving_bench(config: Config, cfg, photo_path: Path, seconds: float, repeats: int = 3) -> None:
    import base64

    photo = read_image(photo_path)
    body = json.dumps({"dataframe_split": {"columns": [IMAGE], "data": [[base64.b64encode(
        photo_path.read_bytes()).decode("ascii")]]}}).encode()
    with tempfile.TemporaryDirectory(prefix="retina-seg-bench-") as tmp:
        folder = Path(tmp)
        run_id = log_untrained(config, cfg, photo, folder)
        segmenter = load_segmenter(folder / "run")  # the very files the pyfunc model carries
        segmenter.masks(segmenter.probabilities(photo))  # warm-up: traces the forward pass
        in_process = []
        for _ in range(repeats):
            started = time.perf_counter()
            segmenter.masks(segmenter.probabilities(photo))
            in_process.append(time.perf_counter() - started)
        proc, url = start_server(run_id, folder)
        try:
            post(url, body)  # warm-up
            served = [post(url, body) for _ in range(repeats)]
            loads = {1: load_test(url, body, seconds)}
        finally:
            stop_server(proc)
        proc, url = start_server(run_id, folder, workers=2)
        try:
            loads[2] = load_test(url, body, seconds)
        finally:
            stop_server(proc)
    one, alone = statistics.median(in_process), statistics.median(served)
    print(f"retina-seg serving benchmark: {config.arch.name.value} {config.backbone.name}, window {config.image_size}, "
          f"{config.data.sampling.value}, {photo.shape[1]}x{photo.shape[0]} {photo_path.name}")
    print(f"  request body     {len(body) / 2**20:8.3f} MB (target < 1 MB)")
    print(f"  in-process       {one:8.3f} s per image (median of {repeats})")
    print(f"  served, 1 client {alone:8.3f} s per request (median of {repeats})")
    for workers, load in loads.items():
        label = f"{workers} worker{'s' if workers > 1 else ''}"
        print(f"  4 clients, {label:9} p50 {load['p50']:.3f} s, p95 {load['p95']:.3f} s, {load['rate']:.3f} "
              f"requests/s over {load['elapsed']:.0f} s, {load['errors']} errors (load average "
              f"{load['load'][0]:.1f} -> {load['load'][1]:.1f} on {os.cpu_count()} cores)")
    print(f"  served ratio     {alone / one:8.3f} (served / in-process; target <= 1.3)")
    print(f"  2 / 1 workers    {loads[2]['rate'] / loads[1]['rate']:8.3f} (throughput with 4 clients)")
