"""Model: the segmentation_models architectures and the weighted losses. Knows nothing of MLflow."""
