"""Stage `card`: the model card beside the model (models/model_card.md), drawn from what the
split, training, evaluate and export wrote, and added to the model's MLflow run as an artifact
and as the run's description (the MLflow UI shows it on the run's page)."""

import hashlib
import logging

import pandas as pd

from pipeline.common.files import read_json, staged_file
from pipeline.common.log import run_stage
from pipeline.contracts import read_run_record
from pipeline.imagedata.manifest import STATE_FILE
from pipeline.params import load_params, load_raw_params
from pipeline.paths import (
    CALIBRATION_CSV,
    CONFUSION_CSV,
    ERRORS_CSV,
    EXPORT_SIGNATURE,
    METRICS_FILE,
    MODEL_CARD,
    PARITY_CSV,
    PER_CLASS_CSV,
    ROOT,
    RUN_FILE,
    SPLIT_DIR,
    SPLIT_MANIFEST,
    TRAIN_METRICS_FILE,
)
from pipeline.reporting.model_card import CardInputs, description, model_card
from pipeline.tracking.results import log_card, run_tags

log = logging.getLogger(__name__)


def main() -> None:
    params, raw_params = load_params(), load_raw_params()
    run_id = read_run_record(RUN_FILE).run_id
    inputs = CardInputs(
        name=params.registered_model,
        run_id=run_id,
        run_tags=run_tags(run_id),
        raw_params=raw_params,
        split=read_json(SPLIT_DIR / STATE_FILE),
        class_counts=pd.read_csv(SPLIT_DIR / "summary.csv", dtype={"class": str}),
        manifest_sha256=hashlib.sha256(SPLIT_MANIFEST.read_bytes()).hexdigest(),
        signature=read_json(EXPORT_SIGNATURE),
        train_metrics=read_json(TRAIN_METRICS_FILE),
        metrics=read_json(METRICS_FILE),
        per_class=pd.read_csv(PER_CLASS_CSV, dtype={"class": str}),
        calibration=pd.read_csv(CALIBRATION_CSV),
        confusion=pd.read_csv(CONFUSION_CSV, index_col=0, dtype={"true": str}),
        errors=pd.read_csv(ERRORS_CSV, dtype={"true_label": str, "predicted_label": str}),
        parity=pd.read_csv(PARITY_CSV),
    )
    text = model_card(inputs)
    with staged_file(MODEL_CARD) as tmp:
        tmp.write_text(text, encoding="utf-8")
    log_card(run_id, raw_params, MODEL_CARD, description(text))
    log.info(f"model card {MODEL_CARD.relative_to(ROOT)} (the description of MLflow run {run_id})")


if __name__ == "__main__":
    run_stage("card", main)
