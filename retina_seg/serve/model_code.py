"""The code MLflow runs to load the served model ("models from code"): the logged model directory holds
this file instead of a cloudpickle of the model object, so loading it unpickles nothing."""

from mlflow.models import set_model

from retina_seg.serve.pyfunc import RetinaSegModel

set_model(RetinaSegModel())
