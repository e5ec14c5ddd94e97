import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.params import load_params, parse_params, set_param
from pipeline.tools.recipes import ARTICLE
from pipeline.training.model import build_model


def _conv_params(k: int, c_in: int, c_out: int) -> int:
    return k * k * c_in * c_out + c_out


def test_the_article_recipe_builds_the_article_architecture(raw_params):
    for key, value in ARTICLE.items():
        set_param(raw_params, key, value)
    cfg = parse_params(raw_params).train.model
    model = build_model((64, 64, 3), 10, cfg)
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
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


def test_the_default_cnn_has_residual_blocks_and_a_global_average_head():
    model = build_model((28, 28, 1), 10, load_params().train.model)
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert [layer.filters for layer in convs] == [64, 128, 128, 256, 256]
    assert {layer.kernel_size for layer in convs} == {(3, 3)}
    adds = [layer.name for layer in model.layers if type(layer).__name__ == "Add"]
    # each block's second convolution adds back what its first one gave
    assert adds == ["block2_add2", "block3_add2"]
    assert model.get_layer("block2_add2").input[1] is model.get_layer("block2_conv1_relu").output
    assert model.get_layer("global_pool").output.shape[1:] == (256,)
    # each block pools after its first convolution: the second one runs on the pooled map
    assert model.get_layer("block3_pool").output.shape[1:] == (3, 3, 256)
    assert model.get_layer("block3_conv2").input.shape[1:] == (3, 3, 256)


def test_model_takes_raw_pixels_and_returns_probabilities():
    cfg = load_params().train.model
    model = build_model((64, 64, 3), 4, cfg)
    batch = np.random.default_rng(0).integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    probabilities = model.predict(batch, verbose=0)
    assert probabilities.shape == (3, 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)


def test_two_class_model_builds():
    cfg = load_params().train.model
    assert build_model((64, 64, 1), 2, cfg).output.shape == (None, 2)


def _cfg(**changes):
    return load_params().train.model.model_copy(update=changes)


def test_model_options_build_the_layers_they_name():
    model = build_model(
        (32, 32, 3),
        5,
        _cfg(batch_norm=True, dropout=0.3, head="global_average", padding="same", dense_units=[8]),
    )
    names = [layer.name for layer in model.layers]
    assert "block1_conv1_bn" in names and "global_pool" in names and "dropout1" in names
    assert "flatten" not in names
    assert model.get_layer("block1_conv1").use_bias is False  # batch norm supplies the shift


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_pooling_after_the_first_convolution_runs_the_later_ones_on_the_pooled_map(padding):
    cfg = _cfg(pool="after_first_conv", padding=padding, residual=padding == "same")
    model = build_model((64, 64, 1), 10, cfg)
    names = [layer.name for layer in model.layers]
    first = names.index("block2_conv1")
    assert names[first + 1 : first + 4] == ["block2_pool", "block2_conv1_bn", "block2_conv1_relu"]
    pooled = model.get_layer("block2_pool").output.shape[1:3]
    assert model.get_layer("block2_conv2").input.shape[1:3] == pooled
    last = model.get_layer(f"block{len(cfg.filters)}_conv{cfg.convs[-1]}_relu")
    assert last.output.shape[1] == cfg.output_size(64)
    assert "block3_pool" in names and names.count("block3_pool") == 1


def test_augmentation_changes_images_in_training_only():
    augment = load_params().train.augmentation.model_copy(
        update={"rotation": 0.2, "zoom": 0.2, "translation": 0.2, "contrast": 0.3}
    )
    model = build_model((16, 16, 1), 2, _cfg(filters=[4], convs_per_block=1), augment, seed=1)
    augmenting = [layer for layer in model.layers if layer.name.startswith("random_")]
    assert len(augmenting) == 4
    batch = np.random.default_rng(0).integers(0, 256, size=(4, 16, 16, 1), dtype=np.uint8)
    inference = [model(batch, training=False).numpy() for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])
    training = [model(batch, training=True).numpy() for _ in range(2)]
    assert not np.array_equal(training[0], training[1])


def test_model_input_is_a_batch_of_uint8_images():
    model = build_model((64, 64, 3), 10, _cfg())
    assert model.input.dtype == "uint8"


def test_model_code_uses_no_tensorflow():
    """Backend-neutral: Keras layers and keras.ops only."""
    source = (Path(__file__).parents[2] / "pipeline" / "training" / "model.py").read_text()
    assert "tensorflow" not in source and "tf." not in source


@pytest.mark.slow
def test_the_model_trains_under_the_jax_backend_without_tensorflow():
    """Keras layers and keras.ops only: the same model code trains under JAX."""
    code = """
import sys
import keras
import numpy as np
import pytest
from pipeline.training.model import build_model
from pipeline.params import load_params
train = load_params().train
model = build_model((64, 64, 3), 3, train.model, train.augmentation, seed=0)
built_without_tensorflow = "tensorflow" not in sys.modules  # seeding, fit use TF if present
model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
images = np.random.default_rng(0).integers(0, 256, (24, 64, 64, 3), dtype=np.uint8)
labels = np.eye(3, dtype=np.float32)[np.arange(24) % 3]
history = model.fit(images, labels, epochs=2, batch_size=8, verbose=0)
probabilities = model.predict(images[:4], verbose=0)
print(keras.backend.backend(), len(history.history["loss"]), probabilities.shape,
      bool(np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)), built_without_tensorflow)
"""
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": "jax"},
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["jax", "2", "(4,", "3)", "True", "True"]
