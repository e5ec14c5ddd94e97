"""The trained model as an MLflow pyfunc model: what `mlflow models serve` and
`mlflow.pyfunc.load_model` hand out (`tracking.registry` logs it).

It takes what an HTTP client can send: a column `image` of base64-encoded image files (any
format, size and colour mode the split accepts; converted exactly as the split converts), or
a batch of uint8 arrays already at the model's size. It answers one row per image: the class,
its probability and one probability per class (`p_<class>`). A request it cannot answer is
refused as a whole with a message naming the row and the reason, which the scoring server
returns as HTTP 400.

MLflow makes a pyfunc model subclass its own `PythonModel`, so this module imports `mlflow`:
the one place outside `pipeline.tracking` that does.
"""

import base64
import binascii
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE

from pipeline.imagedata.images import UnreadableImageError
from pipeline.serving.inference import Classifier, prediction_table

log = logging.getLogger(__name__)

COLUMN = "image"
PIXELS = "pixels"  # or uint8 arrays already at the model's size, as nested lists
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # larger uploads are refused before decoding
# the images of one request together: a larger request is refused before any is decoded
MAX_REQUEST_BYTES = 64 * 1024 * 1024
MAX_ROWS = 4096  # images in one request


class BadRequest(MlflowException):
    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


class InternalError(MlflowException):
    """A fault on the server's side, answered as HTTP 500 with a message and no traceback."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INTERNAL_ERROR)


def decode_base64(value: object, row: int) -> bytes:
    if isinstance(value, bytes):
        data = value
    else:
        try:
            data = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"row {row}: column '{COLUMN}' is not base64") from None
    if not data:
        raise BadRequest(f"row {row}: the image is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise BadRequest(
            f"row {row}: the image has {len(data):,} bytes; at most {MAX_IMAGE_BYTES:,} are taken"
        )
    return data


def _ready_or_error(classifier: Classifier, data: bytes) -> bytes | UnreadableImageError:
    try:
        return classifier.ready(data)
    except UnreadableImageError as error:
        return error


def arrays(images: list, shape: tuple[int, int, int]) -> np.ndarray:
    """Images given as arrays: each of the model's shape, every value a byte."""
    batch = []
    for row, image in enumerate(images):
        array = np.asarray(image)
        if array.shape != shape:
            raise BadRequest(f"row {row}: an array of shape {array.shape}, not {shape}")
        if array.dtype != np.uint8 and (array.min() < 0 or array.max() > 255):
            raise BadRequest(f"row {row}: values outside 0-255 (uint8 pixels expected)")
        batch.append(array.astype(np.uint8))
    return np.stack(batch)


class ImageClassifierModel(mlflow.pyfunc.PythonModel):
    """A pyfunc wrapper around `inference.Classifier` (artifacts: the .keras file, labels.json)."""

    # The signature is given explicitly (type hints cannot say "base64 image or uint8 array"),
    # so MLflow's type-hint validation, and its warning about missing hints, are skipped.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        self.classifier = Classifier.from_files(
            Path(context.artifacts["model"]), Path(context.artifacts["labels"])
        )

    def pixels(self, model_input) -> np.ndarray:
        classifier = self.classifier
        shape = (classifier.image_size, classifier.image_size, classifier.channels)
        if isinstance(model_input, np.ndarray):
            return arrays(list(model_input), shape)
        columns = list(getattr(model_input, "columns", []))
        given = [c for c in (COLUMN, PIXELS) if c in columns and model_input[c].notna().any()]
        if not isinstance(model_input, pd.DataFrame) or len(given) != 1:
            raise BadRequest(
                f"expected one column: '{COLUMN}' (base64 image files) or '{PIXELS}' (uint8 "
                f"arrays of shape {shape}); got {columns}"
            )
        if model_input.empty:
            raise BadRequest("no images in the request")
        if given == [PIXELS]:
            return arrays(model_input[PIXELS].tolist(), shape)
        if len(model_input) > MAX_ROWS:
            raise BadRequest(f"{len(model_input):,} images in one request; at most {MAX_ROWS:,}")
        files = [decode_base64(value, row) for row, value in enumerate(model_input[COLUMN])]
        total = sum(map(len, files))
        if total > MAX_REQUEST_BYTES:
            raise BadRequest(
                f"the request's images have {total:,} bytes together; at most "
                f"{MAX_REQUEST_BYTES:,} are taken in one request (send them in several)"
            )
        with ThreadPoolExecutor(os.cpu_count() or 1) as workers:  # Pillow: outside the GIL
            ready = list(workers.map(_ready_or_error, [classifier] * len(files), files))
        for row, data in enumerate(ready):
            if isinstance(data, UnreadableImageError):
                raise BadRequest(f"row {row}: {data}")
        return classifier.images(ready)  # the request's images decoded as one batch

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        try:
            probabilities = self.classifier.probabilities(self.pixels(model_input))
        except MlflowException:
            raise  # a bad request, already a message naming the row
        except Exception as error:
            # the server's log keeps the traceback; the client gets a message, not Python's
            # internals (MLflow would send it the stack trace)
            log.exception("prediction failed")
            raise InternalError(
                f"the model could not answer this request ({error.__class__.__name__}: "
                f"{error}); the server's log has the details"
            ) from None
        table = prediction_table(probabilities, self.classifier.classes)
        return table.rename(columns={"predicted": "class"})
