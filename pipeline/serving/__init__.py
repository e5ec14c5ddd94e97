"""Serving a trained model: the one inference path, and the MLflow pyfunc model built on it."""
