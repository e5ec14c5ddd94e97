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

from pipeline.common.files import write_csv, write_json
from pipeline.common.log import run_stage
from pipeline.common.native import CUDA_INIT_FAILED, native_stderr
from pipeline.contracts import read_labels, read_run_record
from pipeline.evaluation.parity import Probe, Tolerance, check_parity, export_and_compare
from pipeline.imagedata.dataset import label_indices, load_images, read_split
from pipeline.params import load_params, load_raw_params
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
from pipeline.serving.formats import signature, size_bytes
from pipeline.serving.inference import load_checked
from pipeline.tracking.results import log_export

log = logging.getLogger(__name__)
METRIC_COLUMNS = ("agreement", "accuracy", "max_probability_difference")


def main() -> None:
    params = load_params()
    cfg = params.export
    classes = read_labels(LABELS_FILE).classes
    with native_stderr(CUDA_INIT_FAILED):
        classifier = load_checked(MODEL_FILE, MODEL_LABELS_FILE, classes, LABELS_FILE)
    size, channels = classifier.image_size, classifier.channels
    test, train = read_split("test"), read_split("train")
    images = load_images(test, classes, size, channels)
    true = np.array(label_indices(test["label"], classes))
    # int8 calibration: a seeded draw of training images, in manifest order
    drawn = train.sample(n=min(cfg.calibration_images, len(train)), random_state=params.base.seed)
    calibration = load_images(drawn.sort_index(), classes, size, channels)

    shutil.rmtree(EXPORT_DIR, ignore_errors=True)
    table, probabilities = export_and_compare(
        classifier,
        cfg.formats,
        EXPORT_DIR,
        Probe(images, true, calibration),
        cfg.batch_size,
        size_bytes(MODEL_FILE),
    )
    shutil.copyfile(MODEL_LABELS_FILE, EXPORT_DIR / MODEL_LABELS_FILE.name)
    write_json(EXPORT_SIGNATURE, signature(size, channels, len(classes), cfg.formats))
    write_csv(table, PARITY_CSV, float_format="%.6g")
    rows = table.to_dict("records")
    write_json(EXPORT_METRICS, {f"{r['format']}_{c}": r[c] for r in rows for c in METRIC_COLUMNS})
    log_export(read_run_record(RUN_FILE).run_id, load_raw_params(), table, PARITY_CSV, EXPORT_DIR)
    log.info("parity on %d test images:\n%s", len(test), table.to_string(index=False))
    check_parity(
        table,
        probabilities,
        test["path"],
        classes,
        Tolerance(cfg.max_probability_difference, cfg.int8_max_accuracy_drop),
        str(PARITY_CSV.relative_to(ROOT)),
    )


if __name__ == "__main__":
    run_stage("export", main)
