"""Tracking: the MLflow run lifecycle (one run per job with an honest end status), the outbox that outlives a
server outage, crash recovery, the pre-flight, and reloading logged models."""
