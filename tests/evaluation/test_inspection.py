"""The visualize stage's pieces: image choice, Grad-CAM, weight sharing, the Keras check."""

import keras
import numpy as np
import pandas as pd
import pytest
from keras import layers

from pipeline.evaluation.forward import compare_with_keras, forward
from pipeline.evaluation.inspection import (
    ForwardMismatchError,
    block_ends,
    check_forward,
    conv_representations,
    first_conv_activation,
    first_of_each_class,
    grad_cam,
    grad_cam_layers,
    weight_sharing_metrics,
    weight_sharing_table,
)
from pipeline.params import ModelParams, VisualizeParams
from pipeline.serving.precision import float32_copy
from pipeline.training.model import build_model

SEED_CNN = ModelParams(
    filters=[12, 25],
    convs_per_block=2,
    kernel_size=2,
    padding="valid",
    pool_size=2,
    dense_units=[16],
    batch_norm=False,
    dropout=0.0,
    head="flatten",
    residual=False,
)


def test_first_test_image_of_each_class_in_class_order_and_missing_classes_named():
    rows = pd.DataFrame(
        {"path": ["b1.png", "a1.png", "b2.png", "a2.png"], "label": ["b", "a", "b", "a"]}
    )
    picked, without = first_of_each_class(rows, ["a", "b", "c"])
    assert picked.to_dict("list") == {"path": ["a1.png", "b1.png"], "label": ["a", "b"]}
    assert without == ["c"]


def test_weight_sharing_counts_by_hand():
    inputs = keras.Input((5, 5, 1))
    x = layers.Conv2D(2, 3, name="conv")(inputs)  # 3x3x2 outputs
    x = layers.MaxPooling2D(1, name="pool")(x)
    outputs = layers.Dense(3, name="out")(layers.Flatten()(x))
    table = weight_sharing_table(keras.Model(inputs, outputs))
    assert table[["layer", "cnn", "locally_connected", "fully_connected"]].to_dict("records") == [
        # shared: one 3x3 kernel + bias per filter; local: a kernel + bias per output unit;
        # full: every one of the 25 inputs + bias per output unit (18 units)
        {"layer": "conv", "cnn": 20, "locally_connected": 18 * 10, "fully_connected": 18 * 26},
        {"layer": "out", "cnn": 57, "locally_connected": 57, "fully_connected": 57},
    ]
    metrics = weight_sharing_metrics(table)
    assert metrics["cnn_params"] == 77 and metrics["fully_connected_params"] == 468 + 57
    assert metrics["conv_fully_connected_ratio"] == pytest.approx(468 / 20)


def test_grad_cam_of_a_global_average_head_is_the_class_activation_map():
    """With conv -> global average -> softmax dense, Grad-CAM reduces to CAM (Zhou et al.):
    the feature maps weighted by the class's dense weights."""
    inputs = keras.Input((12, 12, 3), dtype="uint8")
    x = layers.Rescaling(1 / 255)(inputs)
    features = layers.Conv2D(5, 3, activation="relu", name="conv")(x)
    pooled = layers.GlobalAveragePooling2D()(features)
    outputs = layers.Dense(4, activation="softmax", name="probabilities")(pooled)
    model = keras.Model(inputs, outputs)
    head = model.get_layer("probabilities")
    kernel, bias = head.get_weights()
    head.set_weights([np.abs(kernel), bias])  # positive evidence, so no map is all zero
    images = np.random.default_rng(0).integers(0, 256, size=(3, 12, 12, 3), dtype=np.uint8)
    classes = np.array([0, 2, 3])

    cams = grad_cam(model, images, classes, ["conv"])["conv"]

    maps = next(o.value for o in forward(model, images) if o.name == "conv")
    weights = model.get_layer("probabilities").get_weights()[0]  # (5, 4)
    expected = np.maximum(np.einsum("nhwk,kn->nhw", maps, weights[:, classes]), 0)
    expected /= expected.max(axis=(1, 2), keepdims=True)
    assert np.isfinite(expected).all() and (expected > 0).mean() > 0.2
    np.testing.assert_allclose(cams, expected, atol=1e-5)


def test_grad_cam_defaults_to_the_last_convolution_of_every_block():
    model = build_model((20, 20, 3), 3, SEED_CNN)
    assert block_ends(model) == ["block1_conv2", "block2_conv2"]
    cfg = VisualizeParams(feature_maps=4, gradcam_layers=[], tolerance=1e-4)
    assert grad_cam_layers(model, cfg) == ["block1_conv2", "block2_conv2"]
    named = cfg.model_copy(update={"gradcam_layers": ["block2_conv1"]})
    assert grad_cam_layers(model, named) == ["block2_conv1"]
    wrong = cfg.model_copy(update={"gradcam_layers": ["block2_pool", "block9_conv1"]})
    with pytest.raises(ValueError, match=r"\['block2_pool', 'block9_conv1'\].*block1_conv1"):
        grad_cam_layers(model, wrong)


def test_a_block_that_pools_first_keeps_its_last_convolution_and_full_size_responses():
    cfg = SEED_CNN.model_copy(
        update={"batch_norm": True, "pool": "after_first_conv", "padding": "same"}
    )
    model = build_model((20, 20, 3), 3, cfg)
    assert block_ends(model) == ["block1_conv2", "block2_conv2"]  # not each block's first
    images = np.random.default_rng(0).integers(0, 256, size=(2, 20, 20, 3), dtype=np.uint8)
    outputs = forward(model, images)
    values = {o.name: o.value for o in outputs}
    stages = dict(conv_representations(outputs))
    np.testing.assert_array_equal(stages["block1_conv1"], values["block1_conv1_relu"])  # pooled
    activation = first_conv_activation(model, outputs)
    assert activation.shape == values["block1_conv1"].shape  # the convolution's own 20x20
    assert activation.min() >= 0
    # pooling the full-size response gives the network's own pooled, normalised, ReLU'd map
    # (max pooling commutes with the per-channel normalisation where its scale is positive)
    positive = model.get_layer("block1_conv1_bn").gamma.numpy() > 0
    pooled = activation.reshape(2, 10, 2, 10, 2, -1).max(axis=(2, 4))
    np.testing.assert_allclose(
        pooled[..., positive], values["block1_conv1_relu"][..., positive], atol=1e-5
    )


def test_feature_maps_are_taken_after_batch_norm_and_relu():
    cfg = SEED_CNN.model_copy(update={"batch_norm": True})
    model = build_model((20, 20, 3), 3, cfg)
    images = np.random.default_rng(0).integers(0, 256, size=(2, 20, 20, 3), dtype=np.uint8)
    outputs = forward(model, images)
    stages = conv_representations(outputs)
    assert [name for name, _ in stages] == [
        "block1_conv1",
        "block1_conv2",
        "block2_conv1",
        "block2_conv2",
    ]
    relu = {o.name: o.value for o in outputs}["block1_conv1_relu"]
    np.testing.assert_array_equal(stages[0][1], relu)
    assert all(value.min() >= 0 for _, value in stages)


def test_a_mixed_precision_model_is_checked_in_float32():
    """The pipeline trains in mixed_bfloat16 on CPUs that have it: Keras' own outputs are then
    bfloat16-rounded (about 1e-2), so the check runs a float32 copy with the same weights."""
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_model((20, 20, 3), 3, SEED_CNN)
    finally:
        keras.config.set_dtype_policy("float32")
    images = np.random.default_rng(0).integers(0, 256, size=(2, 20, 20, 3), dtype=np.uint8)
    exact = float32_copy(model)
    assert {layer.dtype_policy.name for layer in exact.layers} == {"float32"}
    assert exact.input.dtype == "uint8"
    for ours, theirs in zip(exact.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    for row in compare_with_keras(model, images):
        assert row["max_abs_difference"] <= 1e-4 * max(1.0, row["max_abs_value"]), row


def test_a_layer_beyond_the_tolerance_stops_the_stage_naming_it():
    model = build_model((20, 20, 3), 3, SEED_CNN)
    images = np.random.default_rng(0).integers(0, 256, size=(2, 20, 20, 3), dtype=np.uint8)
    check = check_forward(model, images, 1e-4)
    assert check["within_tolerance"].all() and len(check) == len(model.layers) - 1
    with pytest.raises(ForwardMismatchError, match=r"at layer 'rescale' \(Rescaling\) by "):
        check_forward(model, images, 1e-12)  # float32 rounding is far above 1e-12
