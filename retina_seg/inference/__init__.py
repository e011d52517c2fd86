"""Inference: the Predictor that turns full-resolution images into probabilities, and the retinal metrics.
Shared by evaluation, `predict` and the served model; never imports training."""
