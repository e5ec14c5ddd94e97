"""Parity of exported models with the Keras model they were converted from: on every test
image, the same class, how far apart the probabilities are, the test accuracy, the file size
and the speed, one row per format; and which rows break the rules the stage enforces."""

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from pipeline.common.log import PipelineError
from pipeline.serving.formats import FILES, FLOAT_FORMATS, export_model, inference_model, size_bytes
from pipeline.serving.inference import Classifier
from pipeline.serving.runtimes import load_exported

log = logging.getLogger(__name__)

COLUMNS = [
    "format",
    "agreement",
    "disagreements",
    "max_probability_difference",
    "accuracy",
    "accuracy_change",
    "size_bytes",
    "images_per_second",
]


class ParityError(PipelineError, ValueError):
    """An exported model does not answer as the Keras model does."""


def timed_predictions(
    predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch_size: int
) -> tuple[np.ndarray, float]:
    """Probabilities for `images` in batches (the last one padded to the same shape), and
    the images per second after a warm-up batch (tracing and allocation are start-up)."""
    shape = (batch_size, *images.shape[1:])
    predict(np.zeros(shape, images.dtype))
    parts = []
    start = time.perf_counter()
    for begin in range(0, len(images), batch_size):
        batch = images[begin : begin + batch_size]
        full = np.concatenate([batch, np.zeros((batch_size - len(batch), *shape[1:]), batch.dtype)])
        parts.append(np.asarray(predict(full), dtype=np.float64)[: len(batch)])
    seconds = time.perf_counter() - start
    return np.concatenate(parts), len(images) / max(seconds, 1e-9)


def parity_row(
    fmt: str,
    probabilities: np.ndarray,
    reference: np.ndarray,
    true: np.ndarray,
    size_bytes: int,
    images_per_second: float,
) -> dict:
    """One format against the reference probabilities, on images whose true classes are `true`."""
    predicted, expected = probabilities.argmax(axis=1), reference.argmax(axis=1)
    accuracy = float(np.mean(predicted == true))
    return {
        "format": fmt,
        "agreement": float(np.mean(predicted == expected)),
        "disagreements": int(np.sum(predicted != expected)),
        "max_probability_difference": float(np.abs(probabilities - reference).max()),
        "accuracy": accuracy,
        "accuracy_change": accuracy - float(np.mean(expected == true)),
        "size_bytes": int(size_bytes),
        "images_per_second": float(images_per_second),
    }


def parity_failures(
    table: pd.DataFrame,
    float_formats: tuple[str, ...],
    max_probability_difference: float,
    int8_max_accuracy_drop: float,
) -> list[str]:
    """What the parity table breaks: a float format that predicts another class for any image
    or whose probabilities stray further than allowed, a quantised one that loses more test
    accuracy than allowed."""
    failures = []
    for row in table.itertuples(index=False):
        if row.format in float_formats:
            if row.disagreements:
                failures.append(
                    f"{row.format} predicts another class than Keras for {row.disagreements} "
                    f"of the test images (agreement {row.agreement:.4f})"
                )
            if row.max_probability_difference > max_probability_difference:
                failures.append(
                    f"{row.format}'s probabilities differ from Keras' by up to "
                    f"{row.max_probability_difference:.2g} (export.max_probability_difference "
                    f"= {max_probability_difference:g})"
                )
        elif row.format.endswith("int8") and -row.accuracy_change > int8_max_accuracy_drop:
            failures.append(
                f"{row.format} loses {-row.accuracy_change:.2%} of test accuracy "
                f"({row.accuracy:.4f}; export.int8_max_accuracy_drop = "
                f"{int8_max_accuracy_drop:.2%})"
            )
    return failures


def disagreeing(
    paths: pd.Series, probabilities: np.ndarray, reference: np.ndarray, classes: list[str]
) -> pd.DataFrame:
    """The images on which a format and Keras predict different classes."""
    predicted, expected = probabilities.argmax(axis=1), reference.argmax(axis=1)
    names = np.asarray(classes, dtype=object)
    apart = np.flatnonzero(predicted != expected)
    return pd.DataFrame(
        {
            "path": paths.to_numpy()[apart],
            "keras": names[expected[apart]],
            "exported": names[predicted[apart]],
        }
    )


class Probe(NamedTuple):
    """The images the exports are checked on: the test images and their classes, and the
    training images that calibrate int8 quantisation."""

    images: np.ndarray
    true: np.ndarray
    calibration: np.ndarray


class Tolerance(NamedTuple):
    """How far an export may stray from Keras (params.yaml's `export:` section)."""

    max_probability_difference: float
    int8_max_accuracy_drop: float


def export_and_compare(
    classifier: Classifier,
    formats: list[str],
    folder: Path,
    probe: Probe,
    batch_size: int,
    keras_bytes: int,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Export the model in every format into `folder` and run each export in its runtime on
    the probe's images against the float32 Keras model: the parity table, and each row's
    probabilities. The `.keras` model as trained is a row of its own when it computes in mixed
    precision."""
    images, true, calibration = probe
    # the float32 network with the deployed model's test-time views: what every export carries
    reference_model = inference_model(classifier.model, classifier.views)
    reference, speed = timed_predictions(reference_model.predict_on_batch, images, batch_size)
    rows = [parity_row("keras", reference, reference, true, keras_bytes, speed)]
    found = {"keras": reference}
    mixed = {layer.dtype_policy.name for layer in classifier.model.layers} - {"float32"}
    if mixed:
        trained, speed = timed_predictions(classifier.probabilities, images, batch_size)
        rows.append(parity_row("keras_as_trained", trained, reference, true, keras_bytes, speed))
        log.info(f"the .keras file computes in {', '.join(sorted(mixed))}; the exports in float32")
    for fmt in formats:
        path = export_model(reference_model, fmt, folder / FILES[fmt], calibration)
        runtime = load_exported(path)
        found[fmt], speed = timed_predictions(runtime.predict_on_batch, images, batch_size)
        rows.append(parity_row(fmt, found[fmt], reference, true, size_bytes(path), speed))
        log.info(f"{fmt}: {path.name}, {rows[-1]['agreement']:.4f} agreement with Keras")
    return pd.DataFrame(rows, columns=COLUMNS), found


def check_parity(
    table: pd.DataFrame,
    probabilities: dict[str, np.ndarray],
    paths: pd.Series,
    classes: list[str],
    tolerance: Tolerance,
    table_file: str,
) -> None:
    """Raise ParityError naming what the table breaks, the first images that differ and where
    the table is (`table_file`)."""
    failures = parity_failures(table, FLOAT_FORMATS, *tolerance)
    if not failures:
        return
    exported = [fmt for fmt in probabilities if fmt != "keras"]
    apart = pd.concat(
        disagreeing(paths, probabilities[fmt], probabilities["keras"], classes).assign(format=fmt)
        for fmt in exported
    )
    raise ParityError(
        "the exports do not answer as the Keras model does:\n  "
        + "\n  ".join(failures)
        + f"\nfirst images that differ:\n{apart.head(5).to_string(index=False)}"
        + f"\n(table: {table_file})"
    )
