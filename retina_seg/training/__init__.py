"""Training: compile and fit with the callbacks that keep the best epoch."""
