"""Taking a trained model out of the framework: the MLflow pyfunc model that carries the whole inference
path (and its REST contract), registry promotion, and standalone exports."""

MODEL_FOLDER = "RETINA_SEG_SERVE_MODEL"  # environment: the model folder `retina-seg-serve` hands its app
MODEL_URI = "RETINA_SEG_SERVE_URI"  # environment: the model URI as the user gave it, which the viewer page names
