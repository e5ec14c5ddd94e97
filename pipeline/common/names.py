"""Names as parts of other names: class names in MLflow metric keys, the dataset in the
registered model's name."""

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

AUTO_PREFIX = "image-classifier"  # train.registered_model auto: image-classifier-<dataset>
DIGITS, FASHION_MNIST = "digits", "fashion-mnist"  # the built-in sources of ingest.source
BUILTIN_SOURCES = (DIGITS, FASHION_MNIST)
LONGEST_CLASS_PART = 40  # characters of joined class names before a digest stands in


def metric_key(name: str) -> str:
    """A class name as part of an MLflow metric name or a file name (ASCII letters, digits,
    `_-. ` only). A name that loses characters on the way (any other script: `Кошка`,
    `猫`; a slash) gets the first 8 hex digits of its own SHA-256 appended, so two classes
    never share a key (`____-1d5e2f3a` and `____-9b0c44e7`, not `____` twice)."""
    kept = re.sub(r"[^A-Za-z0-9_\-. ]", "_", name)
    if kept == name:
        return name
    return f"{kept}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def slug(text: str) -> str:
    """Lower case, every run of characters other than letters and digits one `-`."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "data"


def dataset_name(source: str, classes: Sequence[str] = ()) -> str:
    """Which data a model learnt, as a name: the built-in source's, or the source folder's
    (a labels file's stem), as a `slug`; with the classes when `ingest.classes` picks some
    (joined, or a digest of them when long)."""
    name = source if source in BUILTIN_SOURCES else slug(Path(source).stem or source)
    if not classes:
        return name
    joined = slug("-".join(sorted(classes)))
    if len(joined) > LONGEST_CLASS_PART:
        joined = hashlib.sha256("\n".join(sorted(classes)).encode()).hexdigest()[:10]
    return f"{name}-{joined}"


def registered_model_name(setting: str, source: str, classes: Sequence[str] = ()) -> str:
    """`train.registered_model`: auto is one registered model per dataset,
    `image-classifier-<dataset_name>`; any other value is the name itself."""
    if setting != "auto":
        return setting
    return f"{AUTO_PREFIX}-{dataset_name(source, classes)}"
