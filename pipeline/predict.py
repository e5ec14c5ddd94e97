"""Classify new images with a trained model: `python -m pipeline.predict PATH...`.

Files and folders (walked recursively) go through the very conversion the split stage applies
(`images.model_ready`: EXIF orientation, transparency composited, CMYK and 16-bit converted)
and the training decoder (`dataset.decode_contents`), so a picture is seen exactly as the test
split was. A file that cannot be read gets a row with the reason and the batch goes on.
"""

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm import tqdm

from pipeline.dataset import decode_contents
from pipeline.files import write_csv
from pipeline.images import UnreadableImageError, is_junk, model_ready
from pipeline.paths import MODEL_FILE, MODEL_LABELS_FILE, ROOT

WHITE = (255, 255, 255)


class ModelNotFoundError(FileNotFoundError):
    """No model where the user pointed, or none trained yet; the message says which file."""


@dataclass
class Classifier:
    """A trained model with what it needs to take an image file: its class names, its input
    size and channels, and the background transparent pixels were composited on in its split."""

    model: keras.Model
    classes: list[str]
    background: tuple[int, int, int] = WHITE

    def __post_init__(self) -> None:
        _, height, width, self.channels = self.model.input_shape
        if height != width:
            raise ValueError(f"the model takes {height}x{width} images; only square ones work")
        self.image_size = int(height)
        outputs = self.model.output_shape[-1]
        if outputs != len(self.classes):
            raise ValueError(f"the model has {outputs} outputs for {len(self.classes)} classes")

    @classmethod
    def from_files(cls, model_file: Path, labels_file: Path | None = None) -> "Classifier":
        labels_file = labels_file or model_file.with_name("labels.json")
        for path, what in ((model_file, "model file"), (labels_file, "class names")):
            if not path.exists():
                raise ModelNotFoundError(f"{what} {path} is missing: train one with `make run`")
        model = keras.saving.load_model(model_file, safe_mode=True)
        return cls.from_record(model, json.loads(labels_file.read_text(encoding="utf-8")))

    @classmethod
    def from_record(cls, model: keras.Model, record: dict) -> "Classifier":
        """`record`: the `labels.json` train writes beside the model."""
        return cls(model, list(record["classes"]), tuple(record.get("background", WHITE)))

    def pixels(self, data: bytes) -> np.ndarray:
        """One file's bytes to the (size, size, channels) uint8 array the model takes."""
        ready, _ = model_ready(data, self.channels, self.background)
        return decode_contents(tf.constant(ready), self.image_size, self.channels).numpy()

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """A batch of uint8 images (already at the model's size) to class probabilities."""
        return np.asarray(self.model.predict_on_batch(images), dtype=np.float64)

    def table(self, names: list[str], probabilities: np.ndarray, top_k: int) -> pd.DataFrame:
        """One row per image: the class, its probability and the `top_k` best classes."""
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
        rows = []
        for name, probs, best in zip(names, probabilities, order, strict=True):
            row = {"path": name, "predicted": self.classes[best[0]],
                   "confidence": probs[best[0]], "error": ""}  # fmt: skip
            for rank, index in enumerate(best, start=1):
                row[f"top_{rank}"] = self.classes[index]
                row[f"top_{rank}_probability"] = probs[index]
            rows.append(row)
        return pd.DataFrame(rows, columns=self.columns(top_k))

    @staticmethod
    def columns(top_k: int) -> list[str]:
        ranked = [c for k in range(1, top_k + 1) for c in (f"top_{k}", f"top_{k}_probability")]
        return ["path", "predicted", "confidence", *ranked, "error"]


def load_classifier(source: str | None) -> Classifier:
    """A `.keras` file (class names from `labels.json` beside it), an MLflow model URI
    (`runs:/<id>/model`, `models:/<name>/<version>`, `models:/<name>@champion`: the
    pipeline's pyfunc model, or a Keras-flavor model whose run holds `models/labels.json`),
    or by default the model the pipeline trained last (`models/model.keras`)."""
    if source is None:
        return Classifier.from_files(MODEL_FILE, MODEL_LABELS_FILE)
    if ":/" not in source:
        path = Path(source)
        return Classifier.from_files(path / "model.keras" if path.is_dir() else path)
    import mlflow

    from pipeline import tracking

    tracking.configure()
    try:
        info = mlflow.models.get_model_info(source)
        if "keras" not in info.flavors:  # the pipeline's pyfunc model holds both files
            return mlflow.pyfunc.load_model(source).unwrap_python_model().classifier
        model = mlflow.keras.load_model(source)
        labels = mlflow.artifacts.download_artifacts(
            run_id=info.run_id, artifact_path=MODEL_LABELS_FILE.relative_to(ROOT).as_posix()
        )
    except mlflow.exceptions.MlflowException as error:
        raise ModelNotFoundError(f"no model at {source} ({error.message})") from error
    return Classifier.from_record(model, json.loads(Path(labels).read_text(encoding="utf-8")))


def image_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The files named, and every file under the folders named (sorted, hidden ones skipped).
    A path that does not exist is an error before anything is predicted."""
    paths = list(paths)
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"no such file or folder: {', '.join(missing)}")
    for path in paths:
        if path.is_file():
            yield path
            continue
        for folder, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not is_junk(d))
            for name in sorted(f for f in files if not is_junk(f)):
                yield Path(folder) / name


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def predict_files(
    classifier: Classifier, files: Iterable[Path], batch_size: int = 64, top_k: int = 3,
    progress: bool = True,
) -> pd.DataFrame:  # fmt: skip
    """Predictions for every file, in order; unreadable ones with their reason instead."""
    top_k = min(top_k, len(classifier.classes))
    files = list(files)
    parts = []
    with tqdm(total=len(files), unit="image", disable=not progress, file=sys.stderr) as bar:
        for batch in _batches(files, batch_size):
            names, pixels, failed = [], [], []
            for file in batch:
                try:
                    pixels.append(classifier.pixels(file.read_bytes()))
                    names.append(str(file))
                except (UnreadableImageError, OSError, tf.errors.OpError) as error:
                    reason = getattr(error, "message", None) or str(error)
                    failed.append({"path": str(file), "error": reason.strip().splitlines()[0]})
            if pixels:
                probabilities = classifier.probabilities(np.stack(pixels))
                parts.append(classifier.table(names, probabilities, top_k))
            if failed:
                parts.append(pd.DataFrame(failed, columns=classifier.columns(top_k)))
            bar.update(len(batch))
    if not parts:
        return pd.DataFrame(columns=classifier.columns(top_k))
    table = pd.concat(parts, ignore_index=True)
    order = {str(f): i for i, f in enumerate(files)}
    return table.sort_values("path", key=lambda s: s.map(order), ignore_index=True)


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
    parser.add_argument("--model", help="a .keras file or MLflow model URI "
                        "(default: models/model.keras, the model `make run` trained)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV to write")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    try:
        classifier = load_classifier(args.model)
        files = list(image_files(args.paths))
    except (FileNotFoundError, ValueError) as error:
        print(f"predict: {error}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    table = predict_files(classifier, files, args.batch_size, args.top_k, sys.stderr.isatty())
    write_csv(table, args.out, float_format="%.6f")
    print(summary(table, time.perf_counter() - start))
    print(f"  -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
