"""Reporting: paper-ready figures (training curves, error maps, ROC/PR, lesion overlays) and the report.md /
report.html a reader opens without MLflow. Draws what it is given; never logs."""
