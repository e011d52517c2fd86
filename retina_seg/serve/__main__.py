"""`retina-seg-serve <model uri> [--host 127.0.0.1] [--port 5001]` (or `python -m retina_seg.serve`).

Serves a logged retina-seg model over REST: MLflow's own scoring server (what `mlflow models serve
--env-manager local` runs), behind a guard (guard.py) that caps the request body (`serve.max_body_mb`,
HTTP 413), gives it the request timeout to arrive (HTTP 408), and answers a request without a
Content-Type or with an empty or non-JSON body in one line (HTTP 415 / 400). `runs:/` and `models:/`
URIs are downloaded once into a temporary folder, removed when the server stops. The default host is
127.0.0.1: the server has no authentication; put a proxy with authentication and TLS in front of it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from pathlib import Path

from retina_seg.serve import MODEL_FOLDER, MODEL_URI


def model_folder(uri: str, downloads: str) -> str:
    """A local folder holding the model: `uri` itself if it is one, else its download into `downloads`."""
    if Path(uri).is_dir():
        return uri
    import mlflow

    return mlflow.artifacts.download_artifacts(uri, dst_path=downloads)


def main() -> None:
    parser = argparse.ArgumentParser(prog="retina-seg-serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="runs:/<run id>/model, models:/<name>@champion or a model folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout", type=int, default=None,
                        help="seconds for a request's body to arrive (else HTTP 408) and for its answer (else HTTP "
                             "504); default: MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT, or 60")
    args = parser.parse_args()
    import uvicorn  # after parsing, so that --help answers at once
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT

    if args.timeout is not None:
        os.environ[MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.name] = str(args.timeout)
    timeout = MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get()
    # uvicorn shuts down cleanly on SIGINT/SIGTERM, then raises the signal again for the handler it found:
    # these handlers turn it into an exit that removes the downloaded model on the way out
    for hangup in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(hangup, lambda signum, frame: sys.exit(128 + signum))
    try:
        with tempfile.TemporaryDirectory(prefix="retina-seg-serve-") as tmp:
            os.environ[MODEL_FOLDER] = model_folder(args.model, tmp)
            os.environ[MODEL_URI] = args.model
            uvicorn.run("retina_seg.serve.app:app", host=args.host, port=args.port, workers=args.workers,
                        timeout_graceful_shutdown=timeout)
    except KeyboardInterrupt:
        sys.exit(128 + signal.SIGINT)


if __name__ == "__main__":
    main()
