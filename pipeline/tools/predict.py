"""Classify new images with a trained model: `python -m pipeline.tools.predict PATH...`.

Files and folders (walked recursively) are read through the one inference path
(`serving.inference`), so a picture is seen exactly as the test split was. A file that cannot
be read gets a row with the reason and the batch goes on.
"""

import argparse
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from pipeline.common.files import write_csv
from pipeline.common.log import PipelineError, run_stage
from pipeline.common.parallel import progress_bar
from pipeline.imagedata.images import UnreadableImageError, is_junk, not_regular
from pipeline.paths import MODEL_FILE
from pipeline.serving.inference import Classifier, load_classifier, prediction_table


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
        if not path.is_dir():  # a file, or a pipe or device named: read_pixels says why not
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


def columns(top_k: int) -> list[str]:
    ranked = [c for k in range(1, top_k + 1) for c in (f"top_{k}", f"top_{k}_probability")]
    return ["path", "predicted", "confidence", *ranked, "error"]


def read_pixels(classifier: Classifier, file: Path) -> np.ndarray | str:
    """The file as the model takes it, or why it cannot be read (first line of the error);
    a named pipe or a device is never opened."""
    special = not_regular(file)
    if special:
        return special
    try:
        return classifier.pixels(file.read_bytes())
    except (UnreadableImageError, OSError, tf.errors.OpError) as error:
        reason = getattr(error, "message", None) or str(error)
        return reason.strip().splitlines()[0]


def predict_files(
    classifier: Classifier, files: Iterable[Path], batch_size: int = 64, top_k: int = 3
) -> pd.DataFrame:
    """Predictions for every file, in order; unreadable ones with their reason instead."""
    top_k = min(top_k, len(classifier.classes))
    files = list(files)
    table = pd.DataFrame(index=range(len(files)), columns=columns(top_k), dtype=object)
    table["path"], table["error"] = [str(f) for f in files], ""
    with progress_bar(total=len(files), unit="image") as bar:
        for batch in batched(enumerate(files), batch_size):
            read = {i: read_pixels(classifier, file) for i, file in batch}
            rows = [i for i, pixels in read.items() if not isinstance(pixels, str)]
            if rows:
                probabilities = classifier.probabilities(np.stack([read[i] for i in rows]))
                found = prediction_table(probabilities, classifier.classes, top_k, False)
                table.loc[rows, found.columns] = found.to_numpy()
            for i in set(read) - set(rows):
                table.loc[i, "error"] = read[i]
            bar.update(len(batch))
    return table.infer_objects()


def summary(table: pd.DataFrame, seconds: float) -> str:
    read = table[table["error"] == ""]
    lines = [f"predict: {len(read)} images classified in {seconds:.1f} s "
             f"({len(read) / max(seconds, 1e-9):.0f} images/s)"]  # fmt: skip
    if len(read):
        counts = read["predicted"].value_counts()
        lines.append("  predicted: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
        lines.append(f"  median confidence {read['confidence'].median():.3f}; "
                     f"{(read['confidence'] < 0.5).sum()} below 0.5")  # fmt: skip
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
    parser.add_argument("--model", default=str(MODEL_FILE), help="a .keras file, a folder "
                        "holding model.keras, or an MLflow model URI (default: "
                        "models/model.keras, the model `make run` trained)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV to write")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    classifier = load_classifier(args.model)
    files = list(image_files(args.paths))
    start = time.perf_counter()
    table = predict_files(classifier, files, args.batch_size, args.top_k)
    write_csv(table, args.out, float_format="%.6f")
    print(summary(table, time.perf_counter() - start))
    print(f"  -> {args.out}")
    return 0


if __name__ == "__main__":
    run_stage("predict", main)
