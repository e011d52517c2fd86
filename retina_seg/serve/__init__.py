"""Taking a trained model out of the framework: the MLflow pyfunc model that carries the whole inference
path (and its REST contract), registry promotion, and standalone exports."""

MODEL_FOLDER = "RETINA_SEG_SERVE_MODEL"  # environment: the model folder `retina-seg-serve` hands its app
OPTIONS = "RETINA_SEG_SERVE_OPTIONS"  # environment: JSON of the server's options for its app (serve/app.py)
METRICS_FOLDER = "PROMETHEUS_MULTIPROC_DIR"  # environment: prometheus-client's multiprocess folder, read at import
