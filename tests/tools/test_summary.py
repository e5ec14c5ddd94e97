"""tools.summary: the closing lines of `make run`, or what to run first."""

import pytest

from pipeline.common.log import PipelineError
from pipeline.tools import summary


def test_before_a_run_it_says_to_run_the_pipeline(tmp_path, monkeypatch):
    monkeypatch.setattr(summary, "METRICS_FILE", tmp_path / "reports/evaluate/metrics.json")
    monkeypatch.setattr(summary, "ROOT", tmp_path)
    with pytest.raises(PipelineError, match=r"reports/evaluate/metrics\.json is missing: run"):
        summary.summary()


def test_after_a_run_it_names_the_label_suspects_and_their_page(tmp_path, monkeypatch):
    from pipeline.common.files import read_json, write_json

    metrics, audit = tmp_path / "reports/evaluate/metrics.json", tmp_path / "audit.json"
    write_json(
        metrics,
        {
            "accuracy": 0.9,
            "macro_f1": 0.9,
            "n_images": 10,
            "test_suspects": 2,
            "accuracy_without_suspects": 0.95,
        },
    )
    write_json(audit, {"suspects": 7, "images": 50})
    write_json(
        tmp_path / "export.json",
        {"keras_agreement": 1.0, "onnx_agreement": 1.0, "tflite_int8_agreement": 0.99},
    )
    places = {
        "METRICS_FILE": metrics,
        "AUDIT_METRICS": audit,
        "ROOT": tmp_path,
        "REVIEW_PAGE": tmp_path / "reports/audit/review.html",
        "RUN_FILE": tmp_path / "none.json",
        "MODEL_FILE": tmp_path / "models/model.keras",
        "EVALUATE_DIR": tmp_path / "reports/evaluate",
        "TRAIN_REPORTS_DIR": tmp_path / "reports/train",
        "VISUALIZE_REPORT": tmp_path / "reports/visualize/report.html",
        "MODEL_CARD": tmp_path / "models/model_card.md",
        "EXPORT_DIR": tmp_path / "models/export",
        "EXPORT_METRICS": tmp_path / "export.json",
    }
    for name, path in places.items():
        monkeypatch.setattr(summary, name, path)
    assert (
        "Label suspects:  7 of 50 images, 2 in test (accuracy without them 0.9500)  "
        "(reports/audit/review.html; fixes go in data/relabels.csv)"
    ) in summary.summary()
    assert "Exports:         models/export/ (onnx, tflite_int8; parity in" in summary.summary()
    assert "(card: models/model_card.md)" in summary.summary()
    # every metrics file stays one command away, not printed at the end of make run
    assert "Every metric:    dvc metrics show" in summary.summary()
    assert "10 test images; scikit-learn SVC" in summary.summary()  # one view: nothing to add
    write_json(metrics, {**read_json(metrics), "one_view_accuracy": 0.85})
    assert "10 test images, the mean over test-time views, one view 0.8500;" in summary.summary()
