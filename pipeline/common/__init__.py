"""Helpers every part of the pipeline may use: files, processes, logging, progress (no
TensorFlow, no MLflow)."""
