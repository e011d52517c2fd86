"""The ASGI app that `retina-seg-serve` runs under uvicorn: MLflow's own scoring server (the same
`/invocations`, `/ping`, `/health` and `/version` as `mlflow models serve`) for the model folder named
by RETINA_SEG_SERVE_MODEL, behind the RequestGuard sized by the model's `max_body_mb` and MLflow's request timeout,
and the viewer page at `/` (viewer.py)."""

from __future__ import annotations

import os

from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
from mlflow.pyfunc import scoring_server

from retina_seg.serve import MODEL_FOLDER, MODEL_URI
from retina_seg.serve.contract import limits_of
from retina_seg.serve.guard import RequestGuard
from retina_seg.serve.viewer import Viewer, model_info

model = scoring_server.load_model_with_mlflow_config(os.environ[MODEL_FOLDER])
app = RequestGuard(scoring_server.init(model), limits_of(model.model_config).max_body_mb,
                   MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get())
app = Viewer(app, model_info(model, os.environ.get(MODEL_URI, os.environ[MODEL_FOLDER])))  # GET /: the viewer page
