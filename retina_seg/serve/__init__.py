"""Taking a trained model out of the framework: the MLflow pyfunc model that carries the whole inference
path (and its REST contract), registry promotion, and standalone exports."""
