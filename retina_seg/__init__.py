"""retina-seg: config-driven retinal vessel and lesion segmentation with Keras, Hydra and MLflow.

segmentation_models 1.0.1 only works with Keras 2, so the legacy tf-keras stack must be selected
before TensorFlow is first imported anywhere in the process; doing it here means users never have to.

Importing the package sets only the environment: TensorFlow is imported by the modules that build or run a
model, so `reconcile`, `upload`, `compare`, `server` and every `--help` start in about a second.

The terminal stays quiet unless `verbose=true` is on the command line (or RETINA_SEG_VERBOSE=1):
TensorFlow's C++ notices (oneDNN, CUDA stubs) are written through absl before its logging is
initialised, which ignores TF_CPP_MIN_LOG_LEVEL, so wherever TensorFlow is first imported it is loaded
with stderr pointed at /dev/null (`_QuietImports`); segmentation_models prints a banner on stdout, which
would break `--cfg job`. This runs before Hydra parses the command line, hence the look at sys.argv.
"""

import importlib.abc
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
def _quiet():
    """Silence file descriptor 2 itself (C++ libraries write there directly, not through sys.stderr) and
    stdout; with `verbose`, stdout goes to stderr instead and nothing is silenced."""
    if VERBOSE:
        with redirect_stdout(sys.stderr):
            yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        with open(os.devnull, "w") as sink, redirect_stdout(sink):
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _QuietLoader(importlib.abc.Loader):
    """The real loader of a noisy package, run inside `_quiet`; everything else is the real loader's."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        with _quiet():
            self._loader.exec_module(module)
        if module.__name__ == "tensorflow" and not VERBOSE:
            import warnings

            import absl.logging

            absl.logging.set_verbosity(absl.logging.ERROR)
            # the HDF5 format is the one that round-trips segmentation_models' models (see DESIGN.md)
            warnings.filterwarnings("ignore", message="You are saving your model as an HDF5 file")


class _QuietImports(importlib.abc.MetaPathFinder):
    """Finds TensorFlow and segmentation_models as usual, whenever a module first imports them, and loads them
    through `_QuietLoader`: importing this package stays light (the apps that never build a model never load
    TensorFlow), and the first import anywhere still prints no start-up notices or banner."""

    NOISY = ("tensorflow", "segmentation_models")

    def find_spec(self, name, path=None, target=None):
        if name not in self.NOISY:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


if not any(isinstance(finder, _QuietImports) for finder in sys.meta_path):
    sys.meta_path.insert(0, _QuietImports())


def load_model(source, tracking_uri=None, trust=False):
    """Rebuild a trained model from `<BACKBONE>_Retinal.json` + `.h5` (a run id or a local folder);
    `trust=True` allows JSON with code-carrying Lambda layers."""
    from retina_seg.tracking.reload import load_model as _load

    return _load(source, tracking_uri=tracking_uri, trust=trust)


__all__ = ["load_model", "VERBOSE", "__version__"]
