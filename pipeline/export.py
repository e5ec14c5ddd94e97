"""Stage `export`: the trained model in portable formats (ONNX, TFLite float32 and int8,
SavedModel: `export.formats`), each run by its own runtime on the whole test split against
the Keras model, in one parity table (reports/export/parity.csv) that also goes to the
model's MLflow run with the exported files.

The tables are written first; then the stage fails when a float format predicts another class
than Keras for any test image (or its probabilities stray further than
`export.max_probability_difference`), or when int8 loses more than
`export.int8_max_accuracy_drop` of test accuracy. The row `keras` is the float32 model the
exports were converted from; `keras_as_trained` is the `.keras` file itself, when it computes
in mixed precision (its agreement with float32 is reported, not enforced).
"""

import logging
import shutil

import numpy as np
import pandas as pd

from pipeline import CUDA_INIT_FAILED, native_stderr
from pipeline.common.files import write_csv, write_json
from pipeline.common.log import PipelineError, run_stage
from pipeline.contracts import read_labels, read_run_record
from pipeline.evaluation.parity import (
    COLUMNS,
    disagreeing,
    parity_failures,
    parity_row,
    timed_predictions,
)
from pipeline.imagedata.dataset import label_indices, load_images, read_split
from pipeline.params import ExportParams, load_params, load_raw_params
from pipeline.paths import (
    EXPORT_DIR,
    EXPORT_METRICS,
    EXPORT_SIGNATURE,
    LABELS_FILE,
    MODEL_FILE,
    MODEL_LABELS_FILE,
    PARITY_CSV,
    ROOT,
    RUN_FILE,
)
from pipeline.serving.formats import (
    FILES,
    FLOAT_FORMATS,
    export_model,
    inference_model,
    size_bytes,
)
from pipeline.serving.inference import load_checked
from pipeline.serving.runtimes import load_exported
from pipeline.tracking.results import log_export

log = logging.getLogger(__name__)


class ParityError(PipelineError, ValueError):
    """An exported model does not answer as the Keras model does."""


def calibration_rows(train: pd.DataFrame, count: int, seed: int) -> pd.DataFrame:
    """A seeded draw of training images for int8 calibration, in manifest order."""
    return train.sample(n=min(count, len(train)), random_state=seed).sort_index()


def signature(classifier, formats: list[str]) -> dict:
    """What a deployment needs to call the exports (models/export/signature.json)."""
    size, channels = classifier.image_size, classifier.channels
    return {
        "input": {"name": "image", "shape": [None, size, size, channels], "dtype": "uint8",
                  "pixels": "0-255, resized as the training decoder resizes (bilinear)"},
        "output": {"shape": [None, len(classifier.classes)], "dtype": "float32",
                   "meaning": "class probabilities, in the order of labels.json"},
        "files": {fmt: FILES[fmt] for fmt in formats},
    }  # fmt: skip


def parity_table(classifier, images: np.ndarray, true: np.ndarray, calibration: np.ndarray,
                 cfg: ExportParams) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:  # fmt: skip
    """Export every format, run each on `images`; the table and each format's probabilities."""
    reference_model = inference_model(classifier.model)
    reference, speed = timed_predictions(reference_model.predict_on_batch, images, cfg.batch_size)
    rows = [parity_row("keras", reference, reference, true, size_bytes(MODEL_FILE), speed)]
    found = {}
    mixed = {layer.dtype_policy.name for layer in classifier.model.layers} - {"float32"}
    if mixed:
        trained, speed = timed_predictions(classifier.probabilities, images, cfg.batch_size)
        rows.append(
            parity_row("keras_as_trained", trained, reference, true, rows[0]["size_bytes"], speed)
        )
        log.info(f"the .keras file computes in {', '.join(sorted(mixed))}; the exports in float32")
    for fmt in cfg.formats:
        path = export_model(reference_model, fmt, EXPORT_DIR / FILES[fmt], calibration)
        found[fmt], speed = timed_predictions(
            load_exported(path).predict_on_batch, images, cfg.batch_size
        )
        rows.append(parity_row(fmt, found[fmt], reference, true, size_bytes(path), speed))
        log.info(f"{fmt}: {path.relative_to(ROOT)}, {rows[-1]['agreement']:.4f} agreement")
    found["keras"] = reference
    return pd.DataFrame(rows, columns=COLUMNS), found


def main() -> None:
    params = load_params()
    cfg = params.export
    classes = read_labels(LABELS_FILE).classes
    with native_stderr(CUDA_INIT_FAILED):
        classifier = load_checked(MODEL_FILE, MODEL_LABELS_FILE, classes, LABELS_FILE)
    size, channels = classifier.image_size, classifier.channels
    test = read_split("test")
    images = load_images(test, classes, size, channels)
    true = np.array(label_indices(test["label"], classes))
    drawn = calibration_rows(read_split("train"), cfg.calibration_images, params.base.seed)
    calibration = load_images(drawn, classes, size, channels)

    shutil.rmtree(EXPORT_DIR, ignore_errors=True)
    table, probabilities = parity_table(classifier, images, true, calibration, cfg)
    shutil.copyfile(MODEL_LABELS_FILE, EXPORT_DIR / MODEL_LABELS_FILE.name)
    write_json(EXPORT_SIGNATURE, signature(classifier, cfg.formats))
    write_csv(table, PARITY_CSV, float_format="%.6g")
    metrics = {
        f"{row.format}_{key}": getattr(row, key)
        for row in table.itertuples(index=False)
        for key in ("agreement", "accuracy", "max_probability_difference")
    }
    write_json(EXPORT_METRICS, metrics)
    log_export(read_run_record(RUN_FILE).run_id, load_raw_params(), table, PARITY_CSV, EXPORT_DIR)
    log.info("parity on %d test images:\n%s", len(test), table.to_string(index=False))

    failures = parity_failures(
        table, FLOAT_FORMATS, cfg.max_probability_difference, cfg.int8_max_accuracy_drop
    )
    if failures:
        apart = [
            disagreeing(test["path"], probabilities[fmt], probabilities["keras"], classes).assign(
                format=fmt
            )
            for fmt in cfg.formats
        ]
        examples = pd.concat(apart).head(5).to_string(index=False)
        raise ParityError(
            "the exports do not answer as the Keras model does:\n  " + "\n  ".join(failures)
            + f"\nfirst images that differ:\n{examples}\n(table: {PARITY_CSV.relative_to(ROOT)})"
        )  # fmt: skip


if __name__ == "__main__":
    run_stage("export", main)
