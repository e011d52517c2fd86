"""Benchmarks and stress tools (`make bench`, `make bench-server`, `make stress`): measured figures, printed as
ratios from one run. Not part of the installed package."""
