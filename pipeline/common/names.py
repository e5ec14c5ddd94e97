"""Class names as parts of other names: MLflow metric keys and file names."""

import re


def metric_key(name: str) -> str:
    """A class name as part of an MLflow metric name (letters, digits, `_-./ ` only)."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name)
