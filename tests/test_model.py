import numpy as np

from pipeline.model import build_model
from pipeline.params import load_params


def _conv_params(k: int, c_in: int, c_out: int) -> int:
    return k * k * c_in * c_out + c_out


def test_seed_cnn_has_the_article_architecture():
    cfg = load_params().train.model
    model = build_model((64, 64, 3), 10, cfg)
    convs = [
        layer for layer in model.layers if layer.name.startswith("block") and "conv" in layer.name
    ]
    assert [layer.filters for layer in convs] == [12, 12, 25, 25, 50, 50, 100, 100]
    assert model.get_layer("flatten").output.shape[1:] == (2 * 2 * 100,)
    expected = (
        _conv_params(2, 3, 12)
        + _conv_params(2, 12, 12)
        + _conv_params(2, 12, 25)
        + _conv_params(2, 25, 25)
        + _conv_params(2, 25, 50)
        + _conv_params(2, 50, 50)
        + _conv_params(2, 50, 100)
        + _conv_params(2, 100, 100)
        + 400 * 750
        + 750
        + 750 * 250
        + 250
        + 250 * 10
        + 10
    )
    assert model.count_params() == expected


def test_model_takes_raw_pixels_and_returns_probabilities():
    cfg = load_params().train.model
    model = build_model((64, 64, 3), 4, cfg)
    batch = np.random.default_rng(0).uniform(0, 255, size=(3, 64, 64, 3)).astype("float32")
    probabilities = model.predict(batch, verbose=0)
    assert probabilities.shape == (3, 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)


def test_two_class_model_builds():
    cfg = load_params().train.model
    assert build_model((64, 64, 1), 2, cfg).output.shape == (None, 2)
