"""retina-seg: config-driven retinal vessel and lesion segmentation with Keras, Hydra and MLflow.

segmentation_models 1.0.1 only works with Keras 2, so the legacy tf-keras stack must be selected
before TensorFlow is first imported anywhere in the process; doing it here means users never have to.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"


def load_model(source, tracking_uri=None, trust=False):
    """Rebuild a trained model from `<BACKBONE>_Retinal.json` + `.h5` (a run id or a local folder);
    `trust=True` allows JSON with code-carrying Lambda layers."""
    from retina_seg.tracking.reload import load_model as _load

    return _load(source, tracking_uri=tracking_uri, trust=trust)


__all__ = ["load_model", "__version__"]
