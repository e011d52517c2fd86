"""retina-seg: config-driven retinal vessel and lesion segmentation with Keras, Hydra and MLflow.

segmentation_models 1.0.1 only works with Keras 2, so the legacy tf-keras stack must be selected
before TensorFlow is first imported anywhere in the process; doing it here means users never have to.

The terminal stays quiet unless `verbose=true` is on the command line (or RETINA_SEG_VERBOSE=1):
TensorFlow's C++ notices (oneDNN, CUDA stubs) are written through absl before its logging is
initialised, which ignores TF_CPP_MIN_LOG_LEVEL, so TensorFlow is imported here with stderr
pointed at /dev/null; segmentation_models prints a banner on stdout, which would break `--cfg job`.
This runs before Hydra parses the command line, hence the look at sys.argv.
"""

import os
import sys
from contextlib import contextmanager, redirect_stdout

VERBOSE = os.environ.get("RETINA_SEG_VERBOSE") == "1" or any(
    arg.lower() in ("verbose=true", "verbose=1", "+verbose=true") for arg in sys.argv[1:])

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if VERBOSE else "3")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "INFO" if VERBOSE else "WARNING")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true" if VERBOSE else "false")

__version__ = "0.1.0"


@contextmanager
def _stderr_to_devnull():
    """Silence file descriptor 2 itself: C++ libraries write there directly, not through sys.stderr."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _import_quietly() -> None:
    import warnings

    if VERBOSE:
        with redirect_stdout(sys.stderr):
            import segmentation_models  # noqa: F401
        return
    with _stderr_to_devnull(), open(os.devnull, "w") as sink, redirect_stdout(sink):
        import segmentation_models  # noqa: F401  (imports TensorFlow)
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    # the HDF5 format is the one that round-trips segmentation_models' models (see DESIGN.md)
    warnings.filterwarnings("ignore", message="You are saving your model as an HDF5 file")


_import_quietly()


def load_model(source, tracking_uri=None, trust=False):
    """Rebuild a trained model from `<BACKBONE>_Retinal.json` + `.h5` (a run id or a local folder);
    `trust=True` allows JSON with code-carrying Lambda layers."""
    from retina_seg.tracking.reload import load_model as _load

    return _load(source, tracking_uri=tracking_uri, trust=trust)


__all__ = ["load_model", "VERBOSE", "__version__"]
