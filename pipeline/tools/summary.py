"""Print the headline result of the last pipeline run and where its reports are (`make run`)."""

from pipeline.common.files import read_json
from pipeline.common.log import PipelineError, run_stage
from pipeline.contracts import read_run_record
from pipeline.paths import (
    AUDIT_METRICS,
    EVALUATE_DIR,
    EXPORT_DIR,
    EXPORT_METRICS,
    METRICS_FILE,
    MODEL_CARD,
    MODEL_FILE,
    REVIEW_PAGE,
    ROOT,
    RUN_FILE,
    TRAIN_REPORTS_DIR,
    VISUALIZE_REPORT,
)


def one_view(metrics: dict) -> str:
    """The network's accuracy on one view, when the headline is the mean over its test-time
    views (train.test_time_views)."""
    if "one_view_accuracy" not in metrics:
        return ""
    return f", the mean over test-time views, one view {metrics['one_view_accuracy']:.4f}"


def summary() -> str:
    if not METRICS_FILE.exists():
        raise PipelineError(f"{METRICS_FILE.relative_to(ROOT)} is missing: run `dvc repro` first")
    metrics = read_json(METRICS_FILE)
    run_id = read_run_record(RUN_FILE).run_id if RUN_FILE.exists() else "unknown"
    audit = "not audited yet"
    if AUDIT_METRICS.exists():
        found = read_json(AUDIT_METRICS)
        audit = f"{found['suspects']} of {found['images']} images"
        if "accuracy_without_suspects" in metrics:
            audit += (
                f", {metrics['test_suspects']} in test (accuracy without them "
                f"{metrics['accuracy_without_suspects']:.4f})"
            )
    exports = "not exported yet"
    if EXPORT_METRICS.exists():
        found = read_json(EXPORT_METRICS)
        formats = [k.removesuffix("_agreement") for k in found if k.endswith("_agreement")]
        formats = [f for f in formats if not f.startswith("keras")]
        exports = f"{EXPORT_DIR.relative_to(ROOT)}/ ({', '.join(formats)}; " + (
            "parity in reports/export/parity.csv)"
        )
    return "\n".join(
        [
            f"Test accuracy: {metrics['accuracy']:.4f}  (macro F1 {metrics['macro_f1']:.4f}, "
            f"{metrics['n_images']} test images{one_view(metrics)}; scikit-learn SVC on the same "
            "split: "
            f"{metrics.get('baseline_svc_accuracy', float('nan')):.4f})",
            f"Model:           {MODEL_FILE.relative_to(ROOT)}  (card: "
            f"{MODEL_CARD.relative_to(ROOT)})",
            f"Exports:         {exports}",
            f"Training curves: {TRAIN_REPORTS_DIR.relative_to(ROOT)}/history.csv  (dvc plots show)",
            f"Report:          {EVALUATE_DIR.relative_to(ROOT)}/report.html  (one page; the "
            "tables and pictures beside it)",
            f"Inside the CNN:  {VISUALIZE_REPORT.relative_to(ROOT)}  (filters, feature maps, "
            "Grad-CAM, weight sharing)",
            f"Label suspects:  {audit}  ({REVIEW_PAGE.relative_to(ROOT)}; fixes go in "
            "data/relabels.csv)",
            "Every metric:    dvc metrics show  (each stage's metrics file; dvc metrics diff "
            "main: against main)",
            "Compare runs:    make compare  (or make ui)",
            f"MLflow run:      {run_id}  (make ui)",
        ]
    )


if __name__ == "__main__":
    run_stage("summary", lambda: print(summary()))
