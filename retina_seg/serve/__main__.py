"""`retina-seg-serve <model uri> [--host 127.0.0.1] [--port 5001]` (or `python -m retina_seg.serve`).

Runs `mlflow models serve -m <uri> --env-manager local` from this environment: it needs the `uvicorn`
beside this Python on PATH, which an inactive virtual environment does not provide. The default host
is 127.0.0.1: the server has no authentication; put a proxy with authentication in front of it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="runs:/<run id>/model, models:/<name>@champion or a model folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    os.execv(sys.executable, [sys.executable, "-m", "mlflow", "models", "serve", "-m", args.model, "--env-manager",
                              "local", "-h", args.host, "-p", str(args.port), "-w", str(args.workers)])


if __name__ == "__main__":
    main()
