"""Tracking: the MLflow run lifecycle, the evaluation record of a run, reloading logged models, figures."""
