"""serving.views: the test-time views, and the deployed model that averages over them."""

import keras
import numpy as np
import pytest

from pipeline.contracts import ContractError, Labels, read_labels, write_labels
from pipeline.serving.inference import Classifier
from pipeline.serving.views import views, with_views


def test_views_are_the_identity_then_mirrors_and_one_pixel_shifts():
    batch = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1)
    assert [len(views(kind)) for kind in ("none", "flip", "shift", "flip_shift")] == [1, 2, 5, 10]
    identity, mirror = (np.asarray(v(batch)) for v in views("flip"))
    np.testing.assert_array_equal(identity, batch)
    np.testing.assert_array_equal(mirror, batch[:, :, ::-1])
    down, up, right, left = (np.asarray(v(batch))[0, :, :, 0] for v in views("shift")[1:])
    np.testing.assert_array_equal(down[1:], batch[0, :-1, :, 0])  # moved one row down
    np.testing.assert_array_equal(down[0], batch[0, 0, :, 0])  # the edge repeated
    np.testing.assert_array_equal(up[:-1], batch[0, 1:, :, 0])
    np.testing.assert_array_equal(up[-1], batch[0, -1, :, 0])
    np.testing.assert_array_equal(right[:, 1:], batch[0, :, :-1, 0])
    np.testing.assert_array_equal(left[:, :-1], batch[0, :, 1:, 0])
    with pytest.raises(ValueError, match="unknown test-time views 'rotate'"):
        views("rotate")


def _model() -> keras.Model:
    """A small dense model whose answer depends on where the pixels are."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 1), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


@pytest.mark.parametrize("kind", ["flip", "shift", "flip_shift"])
def test_the_deployed_model_answers_with_the_mean_over_its_views(kind):
    model = _model()
    images = np.random.default_rng(0).integers(0, 256, (5, 6, 6, 1), dtype=np.uint8)
    expected = np.mean([model.predict_on_batch(np.asarray(v(images))) for v in views(kind)], 0)
    deployed = with_views(model, kind)
    np.testing.assert_allclose(deployed.predict_on_batch(images), expected, atol=1e-6)
    assert not np.allclose(model.predict_on_batch(images), expected, atol=1e-3)
    assert deployed.input_shape == model.input_shape and deployed.output_shape == (None, 3)
    assert with_views(model, "none") is model


def test_the_classifier_answers_with_the_views_its_labels_name(tmp_path):
    model = _model()
    images = np.random.default_rng(1).integers(0, 256, (4, 6, 6, 1), dtype=np.uint8)
    write_labels(tmp_path / "labels.json", Labels(["a", "b", "c"], test_time_views="shift"))
    labels = read_labels(tmp_path / "labels.json")
    assert labels.test_time_views == "shift"
    classifier = Classifier.from_labels(model, labels)
    assert classifier.labels.test_time_views == "shift"
    expected = with_views(model, "shift").predict_on_batch(images)
    np.testing.assert_allclose(classifier.probabilities(images), expected, atol=1e-6)
    plain = Classifier.from_labels(model, Labels(["a", "b", "c"]))
    np.testing.assert_allclose(plain.probabilities(images), model.predict_on_batch(images), 1e-6)


def test_labels_from_before_the_views_mean_none_and_a_wrong_value_is_named(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text('{"classes": ["a", "b"]}')
    assert read_labels(path).test_time_views == "none"
    path.write_text('{"classes": ["a", "b"], "test_time_views": "twice"}')
    with pytest.raises(ContractError, match="'test_time_views' must be one of none, flip"):
        read_labels(path)
