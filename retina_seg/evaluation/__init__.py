"""Evaluation: the record of a test (thresholds on validation, metrics on test, files written), the
cross-validation record (fold tables, out-of-fold pooling) and the trained-on x tested-on table."""
