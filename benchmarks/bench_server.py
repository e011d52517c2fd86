"""`make bench-server`: N training runs at once against a PostgreSQL-backed tracking server.

Starts a throw-away team server (PostgreSQL + `mlflow server`, accounts off, temporary folder, free
ports), launches N `retina_seg.run` processes on tiny synthetic jobs that all log to it, and meanwhile
logs one probe metric every `--probe-interval` seconds from this process, timing each request: that is
the logging latency a client sees while the server is under the load of N runs. At the end it counts
runs FINISHED and metric values lost (every epoch metric of every run, checked against the run's own
history CSV, plus every probe value), and prints the figures.

    python -m benchmarks.bench_server [--runs 8] [--epochs 3] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from retina_seg.config import PROJECT_ROOT, ServerConfig
from retina_seg.team_server import TeamServer

JOB = ["trainer=fast", "image_size=64", "data.num_images=8", "backbone=resnet18", "augmentation=none",
       "trainer.early_stopping_patience=100", "trainer.reduce_lr_patience=100", "tracking=server",
       "tracking.experiment=bench"]
EPOCH_KEYS = ("loss", "iou_score", "f1-score", "val_loss", "val_iou_score", "val_f1-score", "learning_rate")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def probe(client: MlflowClient, run_id: str, interval: float, stop: threading.Event) -> list[float]:
    """Log metric `probe` every `interval` s until `stop`; the seconds each request took."""
    latencies = []
    while not stop.is_set():
        started = time.perf_counter()
        client.log_metric(run_id, "probe", 1.0, step=len(latencies))
        latencies.append(time.perf_counter() - started)
        stop.wait(interval)
    return latencies


def lost_epoch_metrics(client: MlflowClient, run, folder: Path) -> int:
    """Epoch metric values the run trained but the server does not have."""
    history = Path(client.download_artifacts(run.info.run_id, "resnet18_Retinal.csv", str(folder)))
    epochs = len(history.read_text().strip().splitlines()) - 1
    return sum(epochs - len({m.step for m in client.get_metric_history(run.info.run_id, key)}) for key in EPOCH_KEYS)


def bench(runs: int, epochs: int, interval: float, folder: Path) -> dict:
    server = TeamServer(ServerConfig(folder=str(folder / "server"), port=free_port(), db_port=free_port(),
                                     workers=2))
    try:
        uri = server.start()
        client = MlflowClient(uri)
        probe_run = client.create_run(client.create_experiment("bench-probe")).info.run_id
        stop = threading.Event()
        latencies: list[float] = []
        prober = threading.Thread(target=lambda: latencies.extend(probe(client, probe_run, interval, stop)))
        started = time.perf_counter()
        jobs = [subprocess.Popen([sys.executable, "-m", "retina_seg.run", *JOB, f"trainer.epochs={epochs}",
                                  f"tracking.uri={uri}", f"seed={i}", f"data.root={folder}/job{i}/cache",
                                  f"hydra.run.dir={folder}/job{i}"], cwd=PROJECT_ROOT,
                                 stdout=open(folder / f"job{i}.out", "w"), stderr=subprocess.STDOUT)
                for i in range(runs)]
        prober.start()
        codes = [job.wait() for job in jobs]
        wall = time.perf_counter() - started
        stop.set()
        prober.join()
        logged = client.search_runs([client.get_experiment_by_name("bench").experiment_id])
        finished = [r for r in logged if r.info.status == "FINISHED"]
        lost = sum(lost_epoch_metrics(client, r, folder / "download") for r in finished)
        lost += len(latencies) - len(client.get_metric_history(probe_run, "probe"))
        return {"runs": runs, "finished": len(finished), "exit codes": codes, "lost": lost, "wall": wall,
                "requests": len(latencies), "p50": float(np.percentile(latencies, 50)),
                "p95": float(np.percentile(latencies, 95)), "max": max(latencies)}
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=8, help="concurrent training processes")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--probe-interval", type=float, default=0.5, help="seconds between probe requests")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, database)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="retina-seg-bench-server-"))
    folder.chmod(0o755)  # PostgreSQL's user must reach the server folder inside
    try:
        result = bench(args.runs, args.epochs, args.probe_interval, folder)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"  server           PostgreSQL + mlflow server (2 workers), {os.cpu_count()} CPU cores")
    print(f"  runs             {result['finished']} of {result['runs']} FINISHED "
          f"({args.epochs} epochs each, 64 px), in {result['wall']:.0f} s")
    print(f"  lost metrics     {result['lost']} (epoch metrics of every run + {result['requests']} probe values)")
    print(f"  logging latency  p50 {result['p50'] * 1000:.0f} ms, p95 {result['p95'] * 1000:.0f} ms, "
          f"max {result['max'] * 1000:.0f} ms (log_metric while the runs train)")
    sys.exit(0 if result["finished"] == result["runs"] and result["lost"] == 0 else 1)


if __name__ == "__main__":
    main()
