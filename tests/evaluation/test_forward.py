"""The NumPy forward pass against the seed article's loops and against Keras, layer by layer."""

import keras
import numpy as np
import pytest
from keras import layers

from pipeline.evaluation.forward import (
    UnsupportedLayerError,
    compare_with_keras,
    conv2d,
    forward,
    max_pool2d,
    response_map,
    same_padding,
)
from pipeline.params import ModelParams
from pipeline.training.model import build_model

TOLERANCE = 1e-4


def loop_conv2d(x, kernel, bias, stride, padding):
    """The article's nested loops, one output pixel at a time (the slow, obvious definition)."""
    k_h, k_w, _, count = kernel.shape
    if padding == "same":
        (top, bottom), (left, right) = (
            same_padding(x.shape[i], kernel.shape[i - 1], stride) for i in (1, 2)
        )
        x = np.pad(x, [(0, 0), (top, bottom), (left, right), (0, 0)])
    out_h = (x.shape[1] - k_h) // stride + 1
    out_w = (x.shape[2] - k_w) // stride + 1
    out = np.zeros((len(x), out_h, out_w, count))
    for b in range(len(x)):
        for f in range(count):
            for i in range(out_h):
                for j in range(out_w):
                    window = x[b, i * stride : i * stride + k_h, j * stride : j * stride + k_w]
                    out[b, i, j, f] = np.sum(window * kernel[..., f]) + bias[f]
    return out


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [2, 3])
def test_conv2d_matches_the_article_loops_and_keras(padding, stride, size):
    rng = np.random.default_rng(size * 10 + stride)
    x = rng.normal(size=(2, 9, 10, 3))
    kernel = rng.normal(size=(size, size, 3, 4))
    bias = rng.normal(size=4)
    ours = conv2d(x, kernel, bias, (stride, stride), padding)
    np.testing.assert_allclose(ours, loop_conv2d(x, kernel, bias, stride, padding), atol=1e-12)

    layer = layers.Conv2D(4, size, strides=stride, padding=padding)
    layer.build(x.shape)
    layer.set_weights([kernel.astype("float32"), bias.astype("float32")])
    theirs = keras.ops.convert_to_numpy(layer(x.astype("float32")))
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=TOLERANCE)


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("pool, stride", [(2, 2), (3, 2), (2, 1)])
def test_max_pooling_matches_keras(padding, pool, stride):
    x = np.random.default_rng(pool).normal(size=(2, 7, 8, 3))
    ours = max_pool2d(x, (pool, pool), (stride, stride), padding)
    layer = layers.MaxPooling2D(pool, strides=stride, padding=padding)
    theirs = keras.ops.convert_to_numpy(layer(x.astype("float32")))
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("stride", [1, 2])
def test_response_map_adds_each_output_onto_its_window(padding, stride):
    """The article's `product_arr[h, i:i+3, j:j+3] += dot_product`, as loops."""
    rng = np.random.default_rng(stride)
    height, width, k = 9, 8, 3
    activation = rng.random(
        (
            2,
            *conv2d(
                np.zeros((1, height, width, 1)),
                np.zeros((k, k, 1, 1)),
                None,
                (stride, stride),
                padding,
            ).shape[1:3],
        )
    )
    top, left = (0, 0)
    if padding == "same":
        top, left = same_padding(height, k, stride)[0], same_padding(width, k, stride)[0]
    expected = np.zeros((2, height + 2 * k, width + 2 * k))
    for b in range(2):
        for i in range(activation.shape[1]):
            for j in range(activation.shape[2]):
                row, col = i * stride - top + k, j * stride - left + k
                expected[b, row : row + k, col : col + k] += activation[b, i, j]
    expected = expected[:, k : k + height, k : k + width]
    ours = response_map(activation, (height, width), (k, k), (stride, stride), padding)
    np.testing.assert_allclose(ours, expected)


def _small_params(**changes) -> ModelParams:
    config = {
        "filters": [4, 6],
        "convs_per_block": 2,
        "kernel_size": 2,
        "padding": "valid",
        "pool_size": 2,
        "dense_units": [12],
        "batch_norm": False,
        "dropout": 0.0,
        "head": "flatten",
        "residual": False,
    }
    return ModelParams(**(config | changes))


def _trained(model: keras.Model, tmp_path, steps: int = 6) -> keras.Model:
    """`model` trained briefly on random images, saved and loaded back as a .keras file."""
    rng = np.random.default_rng(0)
    shape = model.input_shape[1:]
    x = rng.integers(0, 256, size=(64, *shape), dtype=np.uint8)
    y = keras.utils.to_categorical(rng.integers(0, model.output_shape[-1], 64))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy")
    model.fit(x, y, batch_size=16, epochs=steps // 4 + 1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    return keras.saving.load_model(path, safe_mode=True)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"padding": "same", "kernel_size": 3},
        {"batch_norm": True, "dropout": 0.3},
        {"head": "global_average"},
        {
            "padding": "same",
            "kernel_size": 3,
            "convs_per_block": [1, 3],
            "batch_norm": True,
            "residual": True,
            "head": "global_average",
            "dense_units": [],
        },
        {"pool": "after_first_conv"},
        {
            "padding": "same",
            "kernel_size": 3,
            "convs_per_block": [1, 2],
            "batch_norm": True,
            "residual": True,
            "pool": "after_first_conv",
            "head": "global_average",
            "dense_units": [],
        },
    ],
    ids=[
        "seed-valid",
        "same-3x3",
        "batch-norm-dropout",
        "global-average",
        "residual-default",
        "pool-early-valid",
        "pool-early-residual",
    ],
)
def test_trained_pipeline_model_matches_keras_layer_by_layer(changes, tmp_path):
    from pipeline.params import AugmentationParams

    augment = AugmentationParams(
        rotation=0.05,
        zoom=0.1,
        translation=0.1,
        flip="none",
        contrast=0.1,
        erasing=0.5,
        mixup=0.0,
        cutmix=0.0,
    )
    built = build_model((20, 20, 3), 5, _small_params(**changes), augment, seed=1)
    model = _trained(built, tmp_path)
    images = np.random.default_rng(1).integers(0, 256, size=(4, 20, 20, 3), dtype=np.uint8)
    rows = compare_with_keras(model, images)
    assert [r["layer"] for r in rows] == [layer.name for layer in model.layers[1:]]
    for row in rows:
        assert row["max_abs_difference"] <= TOLERANCE * max(1.0, row["max_abs_value"]), row
    probabilities = forward(model, images)[-1].value
    np.testing.assert_allclose(probabilities, model.predict(images, verbose=0), atol=TOLERANCE)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_strided_convolutions_match_keras_end_to_end(padding, tmp_path):
    inputs = keras.Input((23, 23, 1), dtype="uint8")
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(6, 3, strides=2, padding=padding, activation="relu")(x)
    x = layers.Conv2D(8, 2, strides=1, padding=padding, activation="relu")(x)
    x = layers.Conv2D(8, 4, strides=2, padding=padding, use_bias=False)(x)
    x = layers.Activation("relu")(x)
    x = layers.MaxPooling2D(2, padding=padding)(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(3, activation="softmax")(x)
    model = _trained(keras.Model(inputs, outputs), tmp_path)
    images = np.random.default_rng(2).integers(0, 256, size=(3, 23, 23, 1), dtype=np.uint8)
    for row in compare_with_keras(model, images):
        assert row["max_abs_difference"] <= TOLERANCE * max(1.0, row["max_abs_value"]), row


def test_a_layer_outside_the_numpy_pass_is_named():
    inputs = keras.Input((8, 8, 3))
    x = layers.DepthwiseConv2D(3, name="depthwise")(inputs)
    model = keras.Model(inputs, layers.Flatten()(x))
    with pytest.raises(UnsupportedLayerError, match="'depthwise' \\(DepthwiseConv2D\\)"):
        forward(model, np.zeros((1, 8, 8, 3)))


def test_a_model_of_two_outputs_is_refused():
    inputs = keras.Input((8, 8, 3))
    a = layers.Conv2D(2, 3, name="left")(inputs)
    b = layers.Conv2D(2, 3, name="right")(inputs)
    model = keras.Model(inputs, [a, b])
    with pytest.raises(UnsupportedLayerError, match="1 inputs and 2 outputs"):
        forward(model, np.zeros((1, 8, 8, 3)))


def test_the_residual_addition_is_a_sum_of_both_branches():
    inputs = keras.Input((6, 6, 1))
    x = layers.Conv2D(3, 3, padding="same", name="first")(inputs)
    y = layers.Conv2D(3, 3, padding="same", activation="relu", name="second")(x)
    model = keras.Model(inputs, layers.Add(name="join")([y, x]))
    images = np.random.default_rng(3).normal(size=(2, 6, 6, 1))
    outputs = {out.name: out.value for out in forward(model, images)}
    np.testing.assert_allclose(outputs["join"], outputs["first"] + outputs["second"])
    np.testing.assert_allclose(outputs["join"], model.predict(images, verbose=0), atol=1e-5)


def test_a_nested_base_model_is_named_as_outside_the_pass():
    """A Keras Applications base sits in the transfer model as one nested model."""
    base_in = keras.Input((8, 8, 3))
    base = keras.Model(base_in, layers.Conv2D(2, 3)(base_in), name="pretrained_base")
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, layers.Flatten()(base(inputs)))
    with pytest.raises(UnsupportedLayerError, match="'pretrained_base' \\(Functional\\)"):
        forward(model, np.zeros((1, 8, 8, 3)))
