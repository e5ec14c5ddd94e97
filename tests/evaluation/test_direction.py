"""evaluation.direction: one rule for which way a metric improves."""

import pytest

from pipeline.evaluation.direction import beats, higher_is_better, lower_is_better


@pytest.mark.parametrize(
    ("metric", "lower"),
    [
        ("test_log_loss", True),
        ("expected_calibration_error", True),
        ("best_val_loss", True),
        ("training_seconds", True),
        ("test_accuracy", False),
        ("macro_f1", False),
        ("images_per_second_later_epochs", False),
    ],
)
def test_losses_errors_and_times_go_down(metric, lower):
    assert lower_is_better(metric) is lower


def test_counts_have_no_direction_and_ties_do_not_beat():
    assert higher_is_better("epochs_run") is None
    assert higher_is_better("accuracy") is True
    assert beats(0.2, 0.3, "log_loss") and not beats(0.3, 0.3, "accuracy")


@pytest.mark.parametrize(
    ("metric", "timing"),
    [
        ("training_seconds", True),
        ("images_per_second_later_epochs", True),
        ("export_onnx_images_per_second", True),
        ("cross_fit_seconds", True),
        ("export_onnx_agreement", False),
        ("test_accuracy", False),
        ("export_onnx_size_bytes", False),
    ],
)
def test_timings_are_told_apart_from_what_the_model_does(metric, timing):
    from pipeline.evaluation.direction import is_timing

    assert is_timing(metric) is timing
