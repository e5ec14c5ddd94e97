"""Parity of exported models with the Keras model they were converted from: on every test
image, the same class, how far apart the probabilities are, the test accuracy, the file size
and the speed, one row per format; and which rows break the rules the stage enforces."""

import time
from collections.abc import Callable

import numpy as np
import pandas as pd

COLUMNS = [
    "format", "agreement", "disagreements", "max_probability_difference", "accuracy",
    "accuracy_change", "size_bytes", "images_per_second",
]  # fmt: skip


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
