"""`make stress`: N `python -m retina_seg.run` processes started at once on a store that does not exist yet.

Before the store's schema was created under a lock, 3 of 4 such processes failed with "table already
exists" / "duplicate column name". Prints how many runs ended FINISHED with their artifacts, and
the wall time (tiny runs: 64 px, trainer=fast, so the figure is about the store, not training).

    python -m benchmarks.stress [--processes 8] [--folder DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from retina_seg.config import PROJECT_ROOT

TINY = ["trainer=fast", "image_size=64", "data.num_images=8", "backbone=resnet18", "augmentation=none"]
ARTIFACTS = {"resnet18_Retinal.json", "resnet18_Retinal.h5", "resnet18_Retinal.csv"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--folder", type=Path, default=None, help="where the new store goes (default: a temp folder)")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="retina-seg-stress-"))
    uri = f"sqlite:///{folder}/mlflow.db"
    common = [*TINY, f"tracking.uri={uri}", f"tracking.artifact_location={folder}/artifacts",
              f"data.root={folder}/cache", "tracking.experiment=stress"]
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "retina_seg.run", *common, f"seed={job}",
                               f"hydra.run.dir={folder}/job{job}"], cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL,
                              stderr=open(folder / f"job{job}.err", "w")) for job in range(args.processes)]
    codes = [proc.wait() for proc in procs]
    seconds = time.perf_counter() - started

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("stress")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    complete = [r for r in runs if r.info.status == "FINISHED"
                and ARTIFACTS <= {a.path for a in client.list_artifacts(r.info.run_id)}]
    print(f"retina-seg concurrent writers: {args.processes} processes started at once on a new SQLite store")
    print(f"  store         {uri}")
    print(f"  exit codes    {codes}")
    print(f"  runs          {len(complete)} of {args.processes} FINISHED with their artifacts")
    print(f"  wall time     {seconds:.0f} s")
    sys.exit(0 if len(complete) == args.processes else 1)


if __name__ == "__main__":
    main()
