"""The ASGI app that `retina-seg-serve` runs under uvicorn: MLflow's own scoring server (the same
`/invocations`, `/ping`, `/health` and `/version` as `mlflow models serve`) for the model folder named
by RETINA_SEG_SERVE_MODEL, behind the RequestGuard sized by the model's `max_body_mb` and MLflow's request timeout;
`/model-card` and `/metrics` beside it; API keys in front of `/invocations` (and `/metrics` if asked) when the
server has a key file; the viewer page at `/` (viewer.py), open without a key like `/model-card`; around everything
the access log, which opens each request's record.

Layers, outermost first: AccessLog -> ApiKeys -> Viewer -> MetricsEndpoint -> ModelCard -> RequestGuard -> MLflow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
from mlflow.pyfunc import scoring_server

from retina_seg.serve import MODEL_FOLDER, metrics
from retina_seg.serve.access import AccessLog, open_log
from retina_seg.serve.card import ModelCard
from retina_seg.serve.contract import limits_of
from retina_seg.serve.guard import RequestGuard
from retina_seg.serve.keys import ApiKeys, read_keys
from retina_seg.serve.options import ServerOptions
from retina_seg.serve.viewer import Viewer, model_info
from retina_seg.tracking import artifacts

options = ServerOptions.imported()
timeout = MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get()
model = scoring_server.load_model_with_mlflow_config(os.environ[MODEL_FOLDER])
served = model.unwrap_python_model()  # the RetinaSegModel: its segmenter and the run's files it carries
app = RequestGuard(scoring_server.init(model), limits_of(model.model_config).max_body_mb, timeout)
app = ModelCard(app, served.run_files / artifacts.MODEL_CARD)
app = metrics.MetricsEndpoint(app)
app = Viewer(app, model_info(model, options.model_uri, options.name, options.version))  # GET /: the page
if options.api_keys:
    app = ApiKeys(app, read_keys(Path(options.api_keys)),
                  ["/invocations", *([metrics.PATH] if options.metrics_need_key else [])], timeout)
app = AccessLog(app, open_log(options.access_log))

validation = served.run_files / artifacts.VALIDATION_STATISTICS
metrics.describe_model(options.name, options.version, model.metadata.run_id, served.segmenter.channels,
                       served.segmenter.predictor.precision.name,
                       json.loads(validation.read_text()) if validation.is_file() else None)
