"""make reproduce's verdicts: exact for the model's metrics, timings and the registry apart,
export sizes within a tolerance (a SavedModel's bytes change with every export)."""

from pipeline.tools.reproduce import side_by_side
from pipeline.tracking.records import RecordedRun


def recorded(metrics: dict[str, float]) -> RecordedRun:
    return RecordedRun("r", "run", "0", "exp", metrics, {}, {})


def verdicts(original: dict[str, float], new: dict[str, float]) -> dict[str, str]:
    table = side_by_side(recorded(original), recorded(new))
    return dict(zip(table["metric"], table["verdict"], strict=True))


def test_model_metrics_must_match_exactly_and_timings_need_not():
    assert verdicts(
        {"test_accuracy": 0.9, "test_macro_f1": 0.8, "training_seconds": 10.0},
        {"test_accuracy": 0.9, "test_macro_f1": 0.8000001, "training_seconds": 12.0},
    ) == {"test_accuracy": "same", "test_macro_f1": "differs", "training_seconds": "timing"}


def test_a_savedmodel_a_few_bytes_apart_is_the_same_size_and_a_real_change_is_not():
    assert verdicts(
        {"export_saved_model_size_bytes": 64742, "export_onnx_size_bytes": 6520},
        {"export_saved_model_size_bytes": 64744, "export_onnx_size_bytes": 6520},
    ) == {"export_saved_model_size_bytes": "size", "export_onnx_size_bytes": "same"}
    assert verdicts(
        {"export_tflite_int8_size_bytes": 10_000}, {"export_tflite_int8_size_bytes": 12_000}
    ) == {"export_tflite_int8_size_bytes": "differs"}


def test_a_metric_only_one_run_has_is_missing():
    assert verdicts({"test_accuracy": 0.9}, {}) == {"test_accuracy": "missing"}
