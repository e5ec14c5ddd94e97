"""Classify new images with a trained model: `python -m pipeline.tools.predict PATH...`.

Files and folders (walked recursively) are read through the one inference path
(`serving.inference`), so a picture is seen exactly as the test split was. A file that cannot
be read gets a row with the reason and the batch goes on. The next batch is read and decoded
while the model predicts this one. `--format onnx|tflite|tflite_int8|saved_model` predicts
with the export in `models/export/` (the `export` stage's), in its own runtime.
"""

import argparse
import os
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from pipeline.common.files import write_csv
from pipeline.common.log import PipelineError, run_stage
from pipeline.common.parallel import progress_bar
from pipeline.imagedata.images import UnreadableImageError, is_junk, not_regular
from pipeline.paths import EXPORT_DIR, MODEL_FILE
from pipeline.serving.formats import FILES
from pipeline.serving.inference import Classifier, prediction_table
from pipeline.tracking.registry import load_classifier


class InputNotFoundError(PipelineError, FileNotFoundError):
    """A file or folder named on the command line does not exist."""


def image_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The files named, and every file under the folders named (sorted, hidden ones skipped).
    A path that does not exist is an error before anything is predicted."""
    paths = list(paths)
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise InputNotFoundError(f"no such file or folder: {', '.join(missing)}")
    for path in paths:
        if not path.is_dir():  # a file, or a pipe or device named: read_ready says why not
            yield path
            continue
        for folder, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not is_junk(d))
            for name in sorted(f for f in files if not is_junk(f)):
                yield Path(folder) / name


def batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def read_ready(classifier: Classifier, file: Path) -> bytes | str:
    """The file as the split would have written it, or why it cannot be read (first line of
    the error); a named pipe or a device is never opened."""
    special = not_regular(file)
    if special:
        return special
    try:
        return classifier.ready(file.read_bytes())
    except (UnreadableImageError, OSError) as error:
        return str(error).strip().splitlines()[0]


def decoded(
    classifier: Classifier, batch: list[tuple[int, Path]], workers: Executor | None = None
) -> tuple[dict, np.ndarray]:
    """A batch of (row, file) read and decoded: the reasons of the rows that could not be
    read, and the images of the others in row order. `workers`: threads that read the files
    side by side (Pillow decodes, resizes and encodes without holding Python's lock, so
    they use every core)."""
    rows, files = [row for row, _ in batch], [file for _, file in batch]
    reading = partial(read_ready, classifier)
    read = dict(
        zip(rows, workers.map(reading, files) if workers else map(reading, files), strict=True)
    )
    failed = {row: value for row, value in read.items() if isinstance(value, str)}
    try:
        images = classifier.images([v for v in read.values() if not isinstance(v, str)])
    except (tf.errors.OpError, OSError, ValueError):  # one file Pillow read and the decoder
        images = []  # cannot: decode them one by one to name it
        for row, value in read.items():
            if row in failed:
                continue
            try:
                images.append(classifier.images([value])[0])
            except (tf.errors.OpError, OSError, ValueError) as error:
                reason = getattr(error, "message", None) or str(error)
                failed[row] = reason.strip().splitlines()[0]
        images = np.stack(images) if images else np.empty((0,))
    return failed, images


def padded(images: np.ndarray, batch_size: int) -> np.ndarray:
    """A short batch filled up with blank images: every batch the model sees has one shape,
    so it is traced (Keras) or resized (LiteRT) once, not again for the last one."""
    missing = batch_size - len(images)
    return np.concatenate([images, np.zeros((missing, *images.shape[1:]), images.dtype)])


def predict_files(
    classifier: Classifier, files: Iterable[Path], batch_size: int = 64, top_k: int = 3
) -> pd.DataFrame:
    """Predictions for every file, in order; unreadable ones with their reason instead."""
    files = list(files)
    probabilities = np.zeros((len(files), len(classifier.classes)))
    errors = [""] * len(files)
    batches = list(batched(enumerate(files), batch_size))
    with (
        progress_bar(total=len(files), unit="image") as bar,
        ThreadPoolExecutor(1) as reader,
        ThreadPoolExecutor(os.cpu_count() or 1) as workers,
    ):
        read = partial(decoded, classifier, workers=workers)
        upcoming = reader.submit(read, batches[0]) if batches else None
        for index, batch in enumerate(batches):
            failed, images = upcoming.result()
            if index + 1 < len(batches):  # read the next batch while the model works
                upcoming = reader.submit(read, batches[index + 1])
            rows = [row for row, _ in batch if row not in failed]
            if rows:
                found = classifier.probabilities(padded(images, batch_size))
                probabilities[rows] = found[: len(rows)]
            for row, reason in failed.items():
                errors[row] = reason
            bar.update(len(batch))
    return prediction_rows(files, probabilities, errors, classifier.classes, top_k)


def prediction_rows(
    files: list[Path],
    probabilities: np.ndarray,
    errors: list[str],
    classes: list[str],
    top_k: int,
) -> pd.DataFrame:
    """The CSV's rows: path, the prediction (empty where the file could not be read), error."""
    table = prediction_table(probabilities, classes, min(top_k, len(classes)), False)
    table = table.astype(object)
    unread = np.array([bool(e) for e in errors], dtype=bool)
    table.loc[unread, :] = np.nan
    table.insert(0, "path", [str(f) for f in files])
    table["error"] = errors
    return table.infer_objects()


def summary(table: pd.DataFrame, seconds: float) -> str:
    read = table[table["error"] == ""]
    rate = len(read) / max(seconds, 1e-9)
    lines = [f"predict: {len(read)} images classified in {seconds:.2f} s ({rate:.3g} images/s)"]
    if len(read):
        counts = read["predicted"].value_counts()
        lines.append("  predicted: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
        lines.append(
            f"  median confidence {read['confidence'].median():.3f}; "
            f"{(read['confidence'] < 0.5).sum()} below 0.5"
        )
    unreadable = table[table["error"] != ""]
    if len(unreadable):
        lines.append(f"  {len(unreadable)} files could not be read:")
        lines += [f"    {row.path}: {row.error}" for row in unreadable.head(10).itertuples()]
        if len(unreadable) > 10:
            lines.append(f"    ... and {len(unreadable) - 10} more (see the CSV)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="image files or folders")
    parser.add_argument(
        "--model",
        default=None,
        help="a .keras file, an export (.onnx, "
        ".tflite, a SavedModel folder), a folder holding model.keras, or an "
        "MLflow model URI (default: models/model.keras, the model `make run` "
        "trained)",
    )
    parser.add_argument(
        "--format",
        choices=["keras", *FILES],
        default=None,
        help="predict with this export (models/export/) of the model",
    )
    parser.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV to write")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    if args.model and args.format:
        parser.error("give --model or --format, not both")
    exported = EXPORT_DIR / FILES[args.format] if args.format not in (None, "keras") else None
    classifier = load_classifier(args.model or exported or str(MODEL_FILE))
    files = list(image_files(args.paths))
    # start-up, not prediction: the model's first batch traces (Keras) or allocates (runtimes)
    size, channels = classifier.image_size, classifier.channels
    classifier.probabilities(np.zeros((args.batch_size, size, size, channels), np.uint8))
    start = time.perf_counter()
    table = predict_files(classifier, files, args.batch_size, args.top_k)
    write_csv(table, args.out, float_format="%.6f")
    print(summary(table, time.perf_counter() - start))
    print(f"  -> {args.out}")
    return 0


if __name__ == "__main__":
    run_stage("predict", main)
