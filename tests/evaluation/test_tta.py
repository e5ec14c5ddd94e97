"""evaluation.tta: the deployed model's probabilities averaged over further views."""

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.evaluation.tta import predict_tta
from pipeline.serving.inference import Classifier


def _left_right_model() -> keras.Model:
    """Class 0 when the left half is brighter, class 1 when the right half is."""
    inputs = keras.Input((4, 4, 1), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    dense = keras.layers.Dense(2, activation="softmax")
    outputs = dense(x)
    side = np.tile([1.0, 1.0, -1.0, -1.0], 4)[:, None] * 0.2
    dense.set_weights([np.hstack([side, -side]), np.zeros(2)])
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize(("kind", "symmetric"), [("flip", True), ("shift", False)])
def test_flip_tta_averages_an_image_with_its_mirror(kind, symmetric, tmp_path):
    left = np.zeros((4, 4), dtype=np.uint8)
    left[:, :2] = 255
    Image.fromarray(left).save(tmp_path / "left.png")
    rows = pd.DataFrame({"path": ["left.png"], "label": ["a"]})
    classifier = Classifier(_left_right_model(), ["a", "b"])
    plain = classifier.predict_rows(rows, 4, root=tmp_path)
    averaged = predict_tta(classifier, rows, 4, kind, root=tmp_path)
    assert plain[0, 0] > 0.95
    np.testing.assert_allclose(averaged.sum(axis=1), 1.0, rtol=1e-6)
    if symmetric:  # the mirror is the opposite class: the average is a coin toss
        np.testing.assert_allclose(averaged[0], [0.5, 0.5], atol=1e-6)
    else:
        assert 0.5 < averaged[0, 0] < plain[0, 0]  # shifts move some brightness across
