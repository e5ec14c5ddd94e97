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
