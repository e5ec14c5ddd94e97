"""Stage `evaluate`: predict the test split and report how the model does, class by class.

Predictions keep the manifest's order, so row i of every report is file i of the test split.
The class list comes from the labels file, so a class missing from the test split keeps its
row and column. The model must have been trained on exactly those classes, checked before any
prediction. Tables come first; every picture and the HTML report are drawn from them. Results
are added to the MLflow run that trained the model, and the registry's `champion` alias
follows the best model.
"""

import logging

import numpy as np

from pipeline.common.files import write_csv, write_json
from pipeline.common.log import run_stage
from pipeline.common.native import CUDA_INIT_FAILED, native_stderr
from pipeline.contracts import read_labels, read_run_record
from pipeline.curation.label_issues import read_suspects
from pipeline.evaluation.metrics import (
    Evaluation,
    confusion_text,
    evaluate_predictions,
    gallery_images,
    summary_metrics,
    suspect_effect,
    svc_baseline,
)
from pipeline.evaluation.tta import predict_tta
from pipeline.imagedata.dataset import label_indices, read_split
from pipeline.params import load_params, load_raw_params
from pipeline.paths import (
    ABUNDANCE_CSV,
    ABUNDANCE_PNG,
    CALIBRATION_CSV,
    CONFUSION_CSV,
    CONFUSION_JSON,
    CONFUSION_NORMALIZED_CSV,
    CONFUSION_PNG,
    ERROR_GALLERY_PNG,
    ERRORS_CSV,
    EVALUATE_DIR,
    EVALUATE_REPORT,
    HISTORY_PNG,
    LABELS_FILE,
    METRICS_FILE,
    MODEL_FILE,
    MODEL_LABELS_FILE,
    PER_CLASS_CSV,
    PREDICTIONS_FILE,
    RELIABILITY_PNG,
    ROOT,
    RUN_FILE,
    SUSPECTS_CSV,
)
from pipeline.reporting.html import evaluation_report, write_page
from pipeline.reporting.plots import (
    abundance_figure,
    confusion_figure,
    error_gallery_figure,
    reliability_figure,
    save_figure,
)
from pipeline.serving.inference import load_checked
from pipeline.tracking import promotion
from pipeline.tracking.results import EvaluationFiles, EvaluationResults, log_evaluation

log = logging.getLogger(__name__)


TTA_METRICS = ("accuracy", "macro_f1", "log_loss", "expected_calibration_error")


def write_tables(result: Evaluation) -> None:
    write_csv(result.predictions, PREDICTIONS_FILE, float_format="%.6f")
    write_csv(result.counts, CONFUSION_CSV, index=True)
    write_csv(result.shares, CONFUSION_NORMALIZED_CSV, index=True, float_format="%.6f")
    write_json(
        CONFUSION_JSON,
        {
            "classes": list(result.counts.columns),
            "counts": result.counts.to_numpy().tolist(),
            "row_normalized": result.shares.round(6).to_numpy().tolist(),
        },
    )
    write_csv(result.abundance, ABUNDANCE_CSV, float_format="%.6f")
    write_csv(result.per_class, PER_CLASS_CSV, float_format="%.6f")
    write_csv(result.calibration, CALIBRATION_CSV, float_format="%.6f")
    write_csv(result.errors, ERRORS_CSV, float_format="%.6f")


def draw_figures(result: Evaluation) -> None:
    errors = result.errors
    captions = [
        f"true {t}\npredicted {p} ({c:.0%})"
        for t, p, c in errors[["true_label", "predicted_label", "confidence"]].itertuples(
            index=False
        )
    ]
    ece = result.metrics["expected_calibration_error"]
    figures = {
        CONFUSION_PNG: confusion_figure(result.counts.to_numpy(), list(result.counts.columns)),
        ABUNDANCE_PNG: abundance_figure(result.abundance),
        RELIABILITY_PNG: reliability_figure(result.calibration, ece),
        ERROR_GALLERY_PNG: error_gallery_figure(gallery_images(errors), captions),
    }
    for path, figure in figures.items():
        save_figure(figure, path)


def report_page(result: Evaluation, run_id: str, top_k: int) -> str:
    pictures = {
        "history": HISTORY_PNG,
        "confusion": CONFUSION_PNG,
        "abundance": ABUNDANCE_PNG,
        "reliability": RELIABILITY_PNG,
        "gallery": ERROR_GALLERY_PNG,
    }
    return evaluation_report(
        metrics=result.metrics,
        per_class=result.per_class,
        extremes=result.extremes,
        calibration=result.calibration,
        errors=result.errors,
        pictures=pictures,
        run_id=run_id,
        model_file=MODEL_FILE.relative_to(ROOT).as_posix(),
        top_k=top_k,
        confusion=result.counts,
        mistakes=result.mistakes,
    )


def main() -> None:
    params = load_params()
    cfg = params.evaluate
    classes = read_labels(LABELS_FILE).classes
    with native_stderr(CUDA_INIT_FAILED):  # train already said which device there is
        classifier = load_checked(MODEL_FILE, MODEL_LABELS_FILE, classes, LABELS_FILE)
    rows = read_split("test")
    probabilities = classifier.predict_rows(rows, cfg.batch_size)
    true = np.array(label_indices(rows["label"], classes))
    result = evaluate_predictions(rows["path"], true, probabilities, classes, cfg)
    result.metrics["baseline_svc_accuracy"] = svc_baseline(read_split("train"), rows)
    # the audit's label suspects: is a mistake the model's or the label's?
    result.metrics |= suspect_effect(result.predictions, read_suspects(SUSPECTS_CSV))
    if classifier.views != "none":  # what the test-time views add, beside the headline
        one_view = classifier.predict_rows(rows, cfg.batch_size, one_view=True)
        result.metrics["one_view_accuracy"] = float(np.mean(one_view.argmax(axis=1) == true))
    if cfg.tta != "none":  # beside the plain score, which stays the headline
        averaged = predict_tta(classifier, rows, cfg.batch_size, cfg.tta)
        scored = summary_metrics(true, averaged, len(classes), cfg.top_k, cfg.calibration_bins)
        result.metrics |= {f"tta_{key}": scored[key] for key in TTA_METRICS}

    write_tables(result)
    draw_figures(result)
    write_json(METRICS_FILE, result.metrics)
    run_id = read_run_record(RUN_FILE).run_id
    write_page(report_page(result, run_id, cfg.top_k), EVALUATE_REPORT)
    files = EvaluationFiles(
        EVALUATE_DIR, (CONFUSION_PNG, CONFUSION_CSV, PER_CLASS_CSV, HISTORY_PNG), (SUSPECTS_CSV,)
    )
    rule = (params.registered_model, cfg.promote_on)
    text = confusion_text(result.counts, result.metrics["accuracy"])
    logged = EvaluationResults(result.metrics, result.per_class, result.counts, text)
    decision = log_evaluation(run_id, load_raw_params(), logged, files, rule)

    log.info(headline(result, classifier.views, cfg.tta, run_id))
    alias = f"models:/{params.registered_model}@{promotion.ALIAS}"
    where = decision.version if decision.promoted else decision.champion_version
    moved = "-> version" if decision.promoted else "stays at version"
    log.info(f"{alias} {moved} {where} ({decision.reason})")


def headline(result, views: str, tta: str, run_id: str) -> str:
    """The stage's log line: the scores, the mistakes, the suspects and where the report is."""
    metrics = result.metrics
    over = ", ".join(
        f"{e['class']} {e['difference']:+.1%}" for e in result.extremes["over_predicted"]
    )
    tta = f"with TTA ({tta}) {metrics['tta_accuracy']:.4f}; " if tta != "none" else ""
    views = (
        f"the mean over test-time views {views}, one view {metrics['one_view_accuracy']:.4f}; "
        if views != "none"
        else ""
    )
    return (
        f"test accuracy {metrics['accuracy']:.4f} ({views}SVC baseline on the same split "
        f"{metrics['baseline_svc_accuracy']:.4f}), macro F1 {metrics['macro_f1']:.4f}, ECE "
        f"{metrics['expected_calibration_error']:.4f} on {metrics['n_images']} images; {tta}"
        f"{result.mistakes} mistakes, {metrics['mistakes_on_suspects']} of them on the "
        f"{metrics['test_suspects']} test images suspected of a wrong label (accuracy "
        f"without them {metrics.get('accuracy_without_suspects', float('nan')):.4f}); "
        f"most over-predicted: {over or 'none'}; "
        f"report {EVALUATE_REPORT.relative_to(ROOT)} (MLflow run {run_id})"
    )


if __name__ == "__main__":
    run_stage("evaluate", main)
