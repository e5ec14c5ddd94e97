"""Which way a metric improves: one rule for promotion, `make compare` and `make report`."""

LOWER_WORDS = ("loss", "error", "seconds")  # losses, calibration error, durations
NEUTRAL = frozenset({"epochs_run", "n_images"})  # counts that are neither better nor worse
# durations and speeds: they vary with the machine and its load, not with the model
TIMING_WORDS = ("seconds", "per_second")


def is_timing(metric: str) -> bool:
    """`training_seconds`, `images_per_second_later_epochs`, `export_onnx_images_per_second`."""
    return any(word in metric for word in TIMING_WORDS)


def lower_is_better(metric: str) -> bool:
    """`test_log_loss`, `expected_calibration_error`, `training_seconds`: lower is better;
    accuracy, F1 and every other score: higher."""
    return any(word in metric for word in LOWER_WORDS)


def higher_is_better(metric: str) -> bool | None:
    """True or False, or None for a count that has no better direction."""
    return None if metric in NEUTRAL else not lower_is_better(metric)


def beats(value: float, other: float, metric: str) -> bool:
    """Whether `value` is strictly better than `other` on `metric`."""
    return value < other if lower_is_better(metric) else value > other
