"""serving.pyfunc: what the served model answers, and every request it refuses, with the row
and the reason (the scoring server turns these into HTTP 400), without starting a server."""

import base64
import io

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.serving import pyfunc
from pipeline.serving.inference import Classifier

CLASSES = ["cat", "dog", "owl"]


@pytest.fixture(scope="module")
def served() -> pyfunc.ImageClassifierModel:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3), dtype="uint8"),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    wrapper = pyfunc.ImageClassifierModel()
    wrapper.classifier = Classifier(model, CLASSES)
    return wrapper


def png(size: int = 8, mode: str = "RGB") -> str:
    buffer = io.BytesIO()
    Image.new(mode, (size, size), (90, 90, 90) if mode == "RGB" else 90).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_images_and_arrays_get_the_same_answers(served):
    answer = served.predict(None, pd.DataFrame({"image": [png(), png(20, "L")]}))
    assert list(answer.columns) == ["class", "confidence", "p_cat", "p_dog", "p_owl"]
    pixels = [np.full((8, 8, 3), 90, np.uint8).tolist()]
    by_array = served.predict(None, pd.DataFrame({"pixels": pixels}))
    assert by_array["class"][0] == answer["class"][0]
    assert by_array["confidence"][0] == pytest.approx(answer["confidence"][0])
    probabilities = answer[["p_cat", "p_dog", "p_owl"]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    assert (answer["confidence"] == probabilities.max(axis=1)).all()


@pytest.mark.parametrize(
    ("request_frame", "message"),
    [
        (pd.DataFrame({"image": ["not base64!"]}), "row 0: column 'image' is not base64"),
        (pd.DataFrame({"image": [png(), ""]}), "row 1: the image is empty"),
        (
            pd.DataFrame({"image": [base64.b64encode(b"hello").decode()]}),
            "row 0: .*not an image|row 0: .*cannot identify",
        ),
        (pd.DataFrame({"picture": [png()]}), r"expected one column: 'image'.*got \['picture'\]"),
        (
            pd.DataFrame({"image": [png()], "pixels": [np.zeros((8, 8, 3)).tolist()]}),
            "expected one column",
        ),
        (
            pd.DataFrame({"pixels": [np.zeros((8, 8)).tolist()]}),
            r"row 0: an array of shape \(8, 8\), not \(8, 8, 3\)",
        ),
        (
            pd.DataFrame({"pixels": [np.full((8, 8, 3), 300).tolist()]}),
            "row 0: values outside 0-255",
        ),
        (pd.DataFrame({"image": pd.Series([], dtype=str)}), "expected one column|no images"),
    ],
)
def test_a_request_it_cannot_answer_is_refused_naming_the_row(served, request_frame, message):
    with pytest.raises(pyfunc.BadRequest, match=message):
        served.predict(None, request_frame)


def test_an_oversized_upload_is_refused_before_decoding(served, monkeypatch):
    monkeypatch.setattr(pyfunc, "MAX_IMAGE_BYTES", 10)
    with pytest.raises(pyfunc.BadRequest, match=r"row 0: the image has \d+ bytes; at most 10"):
        served.predict(None, pd.DataFrame({"image": [png()]}))


def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(served, monkeypatch):
    monkeypatch.setattr(served.classifier, "max_pixels", 50)
    with pytest.raises(pyfunc.BadRequest, match=r"row 0: declared size 8x8 .* not decoded"):
        served.predict(None, pd.DataFrame({"image": [png()]}))


def test_an_unexpected_fault_is_a_message_without_a_traceback(served, monkeypatch):
    """A fault inside the model (not the request's): HTTP 500 with a message; MLflow's own
    handler would send the client the Python stack trace."""
    from mlflow.exceptions import MlflowException

    def broken(images):
        raise RuntimeError("out of memory on the device")

    monkeypatch.setattr(served.classifier, "probabilities", broken)
    with pytest.raises(MlflowException) as raised:
        served.predict(None, pd.DataFrame({"image": [png()]}))
    error = raised.value
    assert error.get_http_status_code() == 500
    assert "Traceback" not in error.serialize_as_json()
    assert error.message == (
        "the model could not answer this request (RuntimeError: out of memory on the device); "
        "the server's log has the details"
    )


def test_a_request_too_large_as_a_whole_is_refused_before_decoding(served, monkeypatch):
    monkeypatch.setattr(pyfunc, "MAX_REQUEST_BYTES", 200)
    monkeypatch.setattr(served.classifier, "pixels", lambda data: pytest.fail("decoded"))
    with pytest.raises(pyfunc.BadRequest, match=r"images have \d+ bytes together; at most 200"):
        served.predict(None, pd.DataFrame({"image": [png()] * 5}))
    monkeypatch.setattr(pyfunc, "MAX_ROWS", 3)
    with pytest.raises(pyfunc.BadRequest, match=r"5 images in one request; at most 3"):
        served.predict(None, pd.DataFrame({"image": [png()] * 5}))
