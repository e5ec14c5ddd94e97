"""training.fitting: class weights."""

import pytest

from pipeline.training.fitting import class_weights


def test_balanced_class_weights_favour_the_rare_class():
    weights = class_weights([0, 0, 0, 1], num_classes=3, mode="balanced")
    assert weights[1] == pytest.approx(3 * weights[0])
    assert weights[2] == 1.0  # absent from training: neutral
    assert class_weights([0, 1], 2, "none") is None
