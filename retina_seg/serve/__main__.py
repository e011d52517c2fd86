"""`retina-seg-serve <model uri> [--host 127.0.0.1] [--port 5001] [options]` (or `python -m retina_seg.serve`).

Serves a logged retina-seg model over REST: MLflow's own scoring server (what `mlflow models serve
--env-manager local` runs), behind a guard (guard.py) that caps the request body (`serve.max_body_mb`,
HTTP 413), gives it the request timeout to arrive (HTTP 408), and answers a request without a
Content-Type or with an empty or non-JSON body in one line (HTTP 415 / 400). Beside it: `/metrics`
(Prometheus), `/model-card`, an access log of JSON lines, API keys (`--api-keys`), TLS (`--ssl-certfile`,
`--ssl-keyfile`) and `--workers N` processes. `runs:/` and `models:/` URIs are downloaded once into a
temporary folder, removed when the server stops (SIGTERM 143, SIGHUP 129, Ctrl-C 130). The default host is
127.0.0.1: expose the server only with keys and TLS, or behind a proxy that has them.
"""

from __future__ import annotations

import argparse
import os
import signal
import ssl
import sys
import tempfile
from pathlib import Path

from retina_seg.errors import INTERNAL_ERROR, USER_ERROR, UserError
from retina_seg.serve import METRICS_FOLDER, MODEL_FOLDER
from retina_seg.serve.keys import read_keys
from retina_seg.serve.options import ServerOptions

APP = "retina_seg.serve.app:app"


class ServeError(UserError):
    """A server option or model URI that cannot be used; one line naming the option."""


def registered(uri: str) -> tuple[str, str | None, str | None]:
    """(the URI to download, registered name, version) of a model URI: `models:/<name>@<alias>` is resolved to
    the version the alias names now, so that the server serves, and names, one version throughout."""
    if not uri.startswith("models:/"):
        return uri, None, None
    name, _, reference = uri.removeprefix("models:/").partition("/")
    if "@" in name:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        name, alias = name.split("@", 1)
        try:
            version = MlflowClient().get_model_version_by_alias(name, alias).version
        except MlflowException as exc:
            raise ServeError(f"{uri}: {exc.message.splitlines()[0]}") from None
        return f"models:/{name}/{version}", name, str(version)
    return uri, name, reference if reference.isdigit() else None


def model_folder(uri: str, downloads: str) -> str:
    """A local folder holding the model: `uri` itself if it is one, else its download into `downloads`."""
    if Path(uri).is_dir():
        return uri
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.artifacts.download_artifacts(uri, dst_path=downloads)
    except MlflowException as exc:
        raise ServeError(f"{uri}: {exc.message.splitlines()[0]}") from None


def check_options(args: argparse.Namespace) -> None:
    """Every option that can be wrong, in one line each, before the model is downloaded or loaded."""
    if args.workers < 1:
        raise ServeError(f"--workers {args.workers}: expected an integer >= 1")
    if args.api_keys:
        read_keys(args.api_keys)
    elif args.metrics_need_key:
        raise ServeError("--metrics-need-key needs --api-keys FILE: the keys /metrics would ask for")
    if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        raise ServeError("--ssl-certfile and --ssl-keyfile go together: give both, or neither")
    if args.ssl_certfile:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(args.ssl_certfile, args.ssl_keyfile)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
            raise ServeError(f"--ssl-certfile {args.ssl_certfile} / --ssl-keyfile {args.ssl_keyfile}: not a PEM "
                             f"certificate and its private key ({reason})") from None
    if args.access_log != "-" and not Path(args.access_log).parent.is_dir():
        raise ServeError(f"--access-log {args.access_log}: folder '{Path(args.access_log).parent}' does not exist")


def share_cores(workers: int) -> None:
    """Workers share the cores instead of each TensorFlow taking all of them (a user's TF_NUM_INTRAOP_THREADS
    and TF_NUM_INTEROP_THREADS win): each gets cores // workers threads, at least one."""
    threads = str(max(1, len(os.sched_getaffinity(0)) // workers))
    for variable in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(variable, threads)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retina-seg-serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="runs:/<run id>/model, models:/<name>@champion or a model folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--workers", type=int, default=1,
                        help="processes, each holding the model, sharing the port, the cores and /metrics")
    parser.add_argument("--timeout", type=int, default=None,
                        help="seconds for a request's body to arrive (else HTTP 408) and for its answer (else HTTP "
                             "504); default: MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT, or 60")
    parser.add_argument("--api-keys", type=Path, default=None, metavar="FILE",
                        help="key file (retina-seg-serve-key NAME --file FILE makes keys): /invocations then needs "
                             "'Authorization: Bearer <key>'")
    parser.add_argument("--metrics-need-key", action="store_true", help="/metrics needs a key too")
    parser.add_argument("--ssl-certfile", default=None, help="PEM certificate (chain): serve HTTPS only")
    parser.add_argument("--ssl-keyfile", default=None, help="PEM private key of --ssl-certfile")
    parser.add_argument("--access-log", default="-", metavar="FILE",
                        help="append one JSON line per request to FILE; default '-': stdout")
    return parser


def main() -> None:
    args = parser().parse_args()
    try:
        check_options(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(USER_ERROR)
    import uvicorn  # after parsing, so that --help answers at once
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT

    if args.timeout is not None:
        os.environ[MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.name] = str(args.timeout)
    timeout = MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get()
    # uvicorn shuts down cleanly on SIGINT/SIGTERM, then raises the signal again for the handler it found:
    # these handlers turn it into an exit that removes the downloaded model on the way out
    for hangup in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(hangup, lambda signum, frame: sys.exit(128 + signum))
    settings = dict(host=args.host, port=args.port, workers=args.workers, timeout_graceful_shutdown=timeout,
                    access_log=False, ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile)
    try:
        with tempfile.TemporaryDirectory(prefix="retina-seg-serve-") as tmp:
            # prometheus-client's multiprocess folder, before anything imports it: every worker writes there; and
            # the workers' temporary files (TensorFlow's autograph code), which a worker stopped by SIGTERM leaves
            for variable, name in ((METRICS_FOLDER, "metrics"), ("TMPDIR", "workers")):
                os.environ[variable] = str(Path(tmp) / name)
                os.mkdir(os.environ[variable])
            try:
                uri, name, version = registered(args.model)
                os.environ[MODEL_FOLDER] = model_folder(uri, tmp)
            except UserError as exc:
                print(f"error: {exc}", file=sys.stderr)
                sys.exit(USER_ERROR)
            ServerOptions(args.model, name, version, str(args.api_keys) if args.api_keys else None,
                          args.metrics_need_key, args.access_log).export()
            share_cores(args.workers)
            if args.workers == 1:
                uvicorn.run(APP, **settings)
            else:
                from retina_seg.serve.workers import run_workers

                stopped_by = run_workers(uvicorn.Config(APP, **settings))
                if stopped_by is None:
                    print("error: a worker failed to start (its log is above)", file=sys.stderr)
                    sys.exit(INTERNAL_ERROR)
                sys.exit(128 + stopped_by)
    except KeyboardInterrupt:
        sys.exit(128 + signal.SIGINT)


if __name__ == "__main__":
    main()
