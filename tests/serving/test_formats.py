"""Exports of a tiny model in every format, each run by its own runtime: the same classes
and probabilities as the float32 Keras model, and the traps on the way there."""

import json

import keras
import numpy as np
import pandas as pd
import pytest

from pipeline.params import AugmentationParams, ModelParams
from pipeline.serving.formats import FILES, FLOAT_FORMATS, export_model, inference_model
from pipeline.serving.inference import Classifier, ModelMismatchError, load_model_file
from pipeline.serving.precision import float32_copy
from pipeline.serving.runtimes import format_of, load_exported
from pipeline.serving.views import with_views
from pipeline.training.model import build_model

SIZE, CLASSES = 16, 3


@pytest.fixture(scope="module")
def trained(raw_params_formats):
    """A tiny CNN with batch normalisation and augmentation layers, fitted a little under
    mixed bfloat16 (as train runs on this CPU) so that its moving statistics are not the
    initial ones; and images it sorts."""
    raw = raw_params_formats["train"]
    cfg = ModelParams(**{**raw["model"], "filters": [4, 8], "convs_per_block": 1})
    augment = AugmentationParams(
        **{**raw["augmentation"], "translation": 0.1, "flip": "horizontal"}
    )
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = build_model((SIZE, SIZE, 1), CLASSES, cfg, augment, seed=0)
    finally:
        keras.config.set_dtype_policy("float32")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (96, SIZE, SIZE, 1), dtype=np.uint8)
    labels = keras.utils.to_categorical(images.mean(axis=(1, 2, 3)) // 86, CLASSES)
    model.compile("adam", "categorical_crossentropy")
    model.fit(images, labels, epochs=2, batch_size=16, verbose=0)
    return model, images


@pytest.fixture(scope="module")
def raw_params_formats():
    from pipeline.params import load_raw_params

    return load_raw_params()


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    model, images = trained
    folder = tmp_path_factory.mktemp("export")
    reference = inference_model(model)
    paths = {fmt: export_model(reference, fmt, folder / FILES[fmt], images[:32]) for fmt in FILES}
    return reference, paths


def test_a_plain_call_of_the_trained_model_is_in_training_mode_but_not_the_inference_one(
    trained,
):
    model, images = trained
    reference = inference_model(model)
    expected = float32_copy(model).predict_on_batch(images)
    # the trap: augmentation layers default to training=True, and batch normalisation follows
    assert np.abs(keras.ops.convert_to_numpy(model(images)) - expected).max() > 1e-2
    assert np.abs(reference(images).numpy() - expected).max() < 1e-6
    assert {layer.dtype_policy.name for layer in reference.layers[-1].layers} == {"float32"}


@pytest.mark.parametrize("fmt", FLOAT_FORMATS)
def test_each_float_format_answers_as_keras_in_its_own_runtime(exported, trained, fmt):
    reference, paths = exported
    images = trained[1]
    runtime = load_exported(paths[fmt])
    assert format_of(paths[fmt]) == fmt
    assert runtime.input_shape == (None, SIZE, SIZE, 1) and runtime.output_shape[-1] == CLASSES
    expected = reference.predict_on_batch(images)
    got = runtime.predict_on_batch(images)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
    assert np.abs(got - expected).max() < 1e-4
    # a batch of another size (the runtime resizes its input), the same answers
    assert np.allclose(runtime.predict_on_batch(images[:5]), expected[:5], atol=1e-4)


@pytest.mark.parametrize("fmt", FLOAT_FORMATS)
def test_an_export_carries_the_deployed_models_test_time_views(trained, fmt, tmp_path):
    model, images = trained
    reference = inference_model(model, "shift")
    expected = with_views(float32_copy(model), "shift").predict_on_batch(images)
    np.testing.assert_allclose(reference.predict_on_batch(images), expected, atol=1e-6)
    runtime = load_exported(export_model(reference, fmt, tmp_path / FILES[fmt], images[:32]))
    got = runtime.predict_on_batch(images)
    assert np.abs(got - expected).max() < 1e-4
    assert np.abs(inference_model(model).predict_on_batch(images) - expected).max() > 1e-4


def test_int8_is_quantised_and_close(exported, trained):
    reference, paths = exported
    images = trained[1]
    runtime = load_exported(paths["tflite_int8"])
    tensors = runtime.interpreter.get_tensor_details()
    assert sum(t["dtype"] == np.int8 for t in tensors) >= 8  # weights and activations
    got = runtime.predict_on_batch(images)
    expected = reference.predict_on_batch(images)
    assert np.mean(got.argmax(axis=1) == expected.argmax(axis=1)) >= 0.9
    assert np.abs(got - expected).max() < 0.1


def test_an_export_predicts_through_the_classifier_with_its_labels(exported, trained, tmp_path):
    _, paths = exported
    labels = paths["onnx"].with_name("labels.json")
    labels.write_text(json.dumps({"classes": ["a", "b", "c"], "background": [255, 255, 255]}))
    classifier = Classifier.from_files(paths["onnx"])
    assert classifier.classes == ["a", "b", "c"] and classifier.image_size == SIZE
    probabilities = classifier.probabilities(trained[1][:4])
    assert probabilities.shape == (4, CLASSES)


def test_a_missing_or_corrupt_export_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"exported model {tmp_path / 'm.onnx'} is missing"):
        load_model_file(tmp_path / "m.onnx")
    (tmp_path / "m.tflite").write_bytes(b"not a flatbuffer")
    with pytest.raises(ModelMismatchError, match=f"exported model {tmp_path / 'm.tflite'} cannot"):
        load_model_file(tmp_path / "m.tflite")


def test_the_cli_predicts_with_an_export_as_with_keras(exported, trained, tmp_path, capsys):
    from PIL import Image

    from pipeline.tools.predict import main

    reference, paths = exported
    images = trained[1][:6]
    folder = tmp_path / "new"
    folder.mkdir()
    for index, image in enumerate(images):
        Image.fromarray(image.squeeze()).save(folder / f"{index}.png")
    labels = {"classes": ["a", "b", "c"], "background": [255, 255, 255]}
    expected = reference.predict_on_batch(images).argmax(axis=1)
    for fmt in ("tflite", "saved_model"):
        (paths[fmt].parent / "labels.json").write_text(json.dumps(labels))
        out = tmp_path / f"{fmt}.csv"
        assert main([str(folder), "--model", str(paths[fmt]), "--out", str(out)]) == 0
        table = pd.read_csv(out)
        assert table["predicted"].tolist() == [labels["classes"][i] for i in expected], fmt
    assert "6 images classified" in capsys.readouterr().out


def test_an_efficientnet_lite0_transfer_model_keeps_its_features_in_int8(tmp_path):
    """The pretrained base's features through the int8 export: with the base's own scaling
    behind the model's 0..1 scaling and a x255 (three scalings in a row), LiteRT's converter
    made features correlating 0.48 with the float model's on real photos; one scaling: 0.96."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    from pipeline.params import TransferParams
    from pipeline.training.transfer import build_transfer_model

    cfg = TransferParams.model_validate(
        {
            "base": "efficientnet_lite0",
            "weights": "imagenet",
            "dense_units": [],
            "dropout": 0.0,
            "schedule": "auto",
            "phases": [],
            "patience": 1,
            "learning_rate_factor": 0.5,
        }
    )
    model = build_transfer_model((96, 96, 3), 2, cfg).model
    features = keras.Model(model.input, model.get_layer("global_pool").output)
    rng = np.random.default_rng(0)
    crops = []
    for name in ("china.jpg", "flower.jpg"):
        photo = load_sample_image(name)
        for _ in range(24):
            top, left = rng.integers(0, 427 - 200), rng.integers(0, 640 - 200)
            crop = Image.fromarray(photo[top : top + 200, left : left + 200]).resize((96, 96))
            crops.append(np.asarray(crop))
    images = np.stack(crops).astype(np.uint8)
    reference = inference_model(features)
    path = export_model(reference, "tflite_int8", tmp_path / "f.tflite", images[::2])
    got = load_exported(path).predict_on_batch(images[1::2])
    expected = reference.predict_on_batch(images[1::2])
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.9
