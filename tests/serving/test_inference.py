"""serving.inference: a model loaded, its classes checked, predictions kept in file order."""

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.evaluation.metrics import predictions_table
from pipeline.serving.inference import (
    Classifier,
    ModelMismatchError,
    ModelNotFoundError,
    load_checked,
    load_keras_model,
)

CLASSES = ["ant", "bee", "cow"]
LABELS = Path("data/split/labels.json")  # where the classes asked for come from


def _brightness_model(levels: list[int]) -> keras.Model:
    """A model whose answer is known: the class whose grey level is nearest the image's mean
    (logit_k = 2 c_k x - c_k^2 ranks classes as -(x - c_k)^2 does)."""
    centres = np.array(levels, dtype=np.float32) / 255
    inputs = keras.Input((8, 8, 1), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(len(levels), activation="softmax")
    outputs = dense(x)
    dense.set_weights([40 * 2 * centres[None, :], -40 * centres**2])
    return keras.Model(inputs, outputs)


def test_predictions_follow_the_file_order_through_the_real_dataset(tmp_path):
    """Known answers, files of the three classes interleaved and more of them than one batch:
    any shuffle or batch misalignment would put a prediction beside the wrong file."""
    levels = {"dark": 20, "mid": 128, "light": 235}
    rows = []
    for n in range(23):
        name = list(levels)[(n * 7) % 3]
        path = f"test/{name}/{n:02d}.png"
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), levels[name], np.uint8)).save(tmp_path / path)
        rows.append({"path": path, "label": name})
    rows = pd.DataFrame(rows)
    classes = ["light", "dark", "mid"]  # the labels file's order, not alphabetical
    model = _brightness_model([levels[c] for c in classes])
    probabilities = Classifier(model, classes).predict_rows(rows, batch_size=5, root=tmp_path)
    true = np.array([classes.index(c) for c in rows["label"]])
    table = predictions_table(rows["path"], true, probabilities, classes)
    assert (table["predicted_label"] == rows["label"]).all()
    assert (table["true_label"] == rows["label"]).all()
    assert table["path"].tolist() == rows["path"].tolist()


def _saved_model(tmp_path, classes: list[str], outputs: int | None = None):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), dtype="uint8"),
            keras.layers.Flatten(),
            keras.layers.Dense(outputs or len(classes)),
        ]
    )
    model_file = tmp_path / "model.keras"
    model.save(model_file)
    labels = tmp_path / "model_labels.json"
    labels.write_text(json.dumps({"classes": classes}))
    return model_file, labels


def test_a_model_of_other_classes_is_refused_before_predicting(tmp_path):
    model_file, labels = _saved_model(tmp_path, ["ant", "bee", "owl"])
    with pytest.raises(ModelMismatchError, match=r"does not know: \['cow'\].*lacks: \['owl'\]"):
        load_checked(model_file, labels, CLASSES, LABELS)
    model_file, labels = _saved_model(tmp_path, ["bee", "ant", "cow"])
    with pytest.raises(ModelMismatchError, match="another order"):
        load_checked(model_file, labels, CLASSES, LABELS)
    model_file, labels = _saved_model(tmp_path, CLASSES, outputs=4)
    with pytest.raises(ModelMismatchError, match="has 4 outputs"):
        load_checked(model_file, labels, CLASSES, LABELS)
    model_file, labels = _saved_model(tmp_path, CLASSES)
    assert load_checked(model_file, labels, CLASSES, LABELS).model.output_shape == (None, 3)


def test_a_missing_or_corrupt_model_file_is_named(tmp_path):
    model_file, labels = _saved_model(tmp_path, CLASSES)
    with pytest.raises(ModelNotFoundError, match=r"model file .*absent\.keras is missing"):
        load_checked(tmp_path / "absent.keras", labels, CLASSES, LABELS)
    with pytest.raises(ModelNotFoundError, match=r"model_labels\.json.* is missing"):
        load_checked(model_file, tmp_path / "model_labels.json.gone", CLASSES, LABELS)
    model_file.write_bytes(model_file.read_bytes()[:200])  # truncated, as by a full disk
    with pytest.raises(ModelMismatchError, match=r"model\.keras cannot be loaded.*corrupt"):
        load_checked(model_file, labels, CLASSES, LABELS)


def test_a_pickle_a_lambda_layer_and_an_h5_file_are_refused_naming_the_file(tmp_path):
    """The three ways a model file runs code as it loads, each refused with the file named."""
    import pickle

    pickled = tmp_path / "pickled.keras"
    pickled.write_bytes(pickle.dumps({"not": "a model"}))
    with pytest.raises(ModelMismatchError, match=rf"{pickled} cannot be loaded \(not a Keras zip"):
        load_keras_model(pickled)

    inputs = keras.Input((4,))
    lambda_model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    with_lambda = tmp_path / "lambda.keras"
    lambda_model.save(with_lambda)
    with pytest.raises(ModelMismatchError, match=rf"{with_lambda} cannot be loaded .*Lambda"):
        load_keras_model(with_lambda)

    h5 = tmp_path / "legacy.h5"
    _brightness_model([10, 120, 240]).save(h5)
    with pytest.raises(ModelMismatchError, match=rf"{h5} is not a .keras file"):
        load_keras_model(h5)


def _encoded(pixels: np.ndarray, fmt: str) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(pixels.squeeze() if pixels.shape[-1] == 1 else pixels).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("channels", [1, 3])
def test_a_batch_is_decoded_exactly_as_the_training_decoder_decodes_each_file(channels):
    """PNGs of the model's size, smaller and larger (resized together, by size), and JPEGs
    (the training decoder's own graph, DCT scaling included) in one batch."""
    import tensorflow as tf

    from pipeline.imagedata.dataset import decode_contents

    rng = np.random.default_rng(channels)
    shapes = [(16, 16), (8, 8), (8, 8), (40, 24), (16, 16), (70, 90)]
    files = [
        _encoded(rng.integers(0, 256, (*shape, channels), dtype=np.uint8), fmt)
        for shape in shapes
        for fmt in ("PNG", "JPEG")
    ]
    model = keras.Sequential(
        [
            keras.Input((16, 16, channels), dtype="uint8"),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    classifier = Classifier(model, ["a", "b"])
    got = classifier.images([classifier.ready(data) for data in files])
    expected = [decode_contents(tf.constant(classifier.ready(d)), 16, channels) for d in files]
    assert got.shape == (len(files), 16, 16, channels)
    assert np.array_equal(got, np.stack([e.numpy() for e in expected]))


def test_the_training_decoder_works_inside_a_tf_function_on_images_it_resizes():
    """The check of the decoded size sat in the branch that skips the resize; traced in a
    tf.function (not in a tf.data map) that branch's check ran anyway and failed."""
    import tensorflow as tf

    from pipeline.imagedata.dataset import decode_contents

    decode = tf.function(lambda data: decode_contents(data, 16, 1))
    small = _encoded(np.full((8, 8, 1), 7, np.uint8), "PNG")
    assert decode(tf.constant(small)).shape == (16, 16, 1)
