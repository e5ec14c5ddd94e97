"""The trained model in portable formats, through Keras' own exporters: ONNX (tf2onnx), TFLite
for LiteRT in float32 and int8 (the LiteRT converter, post-training quantisation calibrated on
training images) and SavedModel (TF Serving).

A `.keras` file cannot go to the converters as it is. Trained under a mixed-precision policy
it computes in bfloat16 or float16, which ONNX Runtime refuses (a Mul of float16 and bfloat16)
and TFLite turns into Flex ops no phone has; and a plain call of a Keras 3 model whose
augmentation layers default to `training=True` runs its batch normalisation on batch
statistics, so an export traced from it answers differently from the model
(docs/benchmarks.md; tf2onnx cannot convert the random ops either). `inference_model`
rebuilds it in float32 with `training=False` fixed in the graph; that float32 model is the
reference the exports are checked against (`evaluation.parity`).
"""

import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import numpy as np

from pipeline.common.log import PipelineError
from pipeline.common.native import native_stderr
from pipeline.serving.precision import float32_copy
from pipeline.serving.runtimes import LITERT_NOISE
from pipeline.serving.views import with_views

# each format, and the name it gets in the export folder
FILES = {
    "onnx": "model.onnx",
    "tflite": "model.tflite",
    "tflite_int8": "model_int8.tflite",
    "saved_model": "saved_model",
}
FLOAT_FORMATS = ("onnx", "tflite", "saved_model")  # must agree with Keras on every image
CALIBRATION_BATCH = 8


class ExportError(PipelineError, RuntimeError):
    """A converter failed on the model; the message names the format and the converter's error."""


def inference_model(model: keras.Model, views: str = "none") -> keras.Model:
    """`model` as the converters need it: computing in float32 (`precision.float32_copy`, the
    same weights), inference mode fixed in the graph (`training=False`: augmentation is the
    identity, batch normalisation uses its moving statistics), with its test-time `views`
    (`serving.views`) inside."""
    exact = float32_copy(model)
    image = keras.Input(model.input_shape[1:], dtype=model.inputs[0].dtype, name="image")
    inference = keras.Model(image, exact(image, training=False), name="inference")
    inference = with_views(inference, views)
    inference(np.zeros((1, *model.input_shape[1:]), image.dtype))  # ONNX exports called models
    return inference


def calibration_batches(images: np.ndarray) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The representative dataset the int8 converter measures activation ranges on."""

    def batches() -> Iterator[list[np.ndarray]]:
        for start in range(0, len(images), CALIBRATION_BATCH):
            yield [images[start : start + CALIBRATION_BATCH]]

    return batches


logging.getLogger("tf2onnx").setLevel(logging.ERROR)  # its notes on every conversion


def export_model(
    model: keras.Model, fmt: str, path: Path, calibration: np.ndarray | None = None
) -> Path:
    """Write `model` (an `inference_model`) in format `fmt` to `path` (written aside, then moved
    into place). int8 needs `calibration`: uint8 images from the training split."""
    import tensorflow as tf

    # only TFLite's builtin operators: no Flex delegate needed on a phone or a board
    builtins = {"target_spec": {"supported_ops": {tf.lite.OpsSet.TFLITE_BUILTINS}}}
    options = {
        "onnx": {"format": "onnx"},
        "tflite": {"format": "litert", **builtins},
        "saved_model": {"format": "tf_saved_model"},
    }
    if fmt == "tflite_int8":
        if calibration is None or not len(calibration):
            raise ExportError("tflite_int8 needs calibration images from the training split")
        options[fmt] = {
            "format": "litert",
            **builtins,
            "optimizations": [tf.lite.Optimize.DEFAULT],
            "representative_dataset": calibration_batches(calibration),
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        written = Path(scratch) / path.name
        try:
            with native_stderr(LITERT_NOISE), warnings.catch_warnings():
                # Keras' tf2onnx patch checks for np.object, which NumPy 2 warns about
                warnings.simplefilter("ignore", FutureWarning)
                model.export(str(written), verbose=False, **options[fmt])
        except Exception as error:  # a converter's failure, whatever its type: name the format
            raise ExportError(
                f"exporting the model to {fmt} failed ({type(error).__name__}: "
                f"{str(error).strip().splitlines()[0] if str(error).strip() else ''})"
            ) from error
        if path.is_dir():
            shutil.rmtree(path)
        written.replace(path)
    return path


def signature(image_size: int, channels: int, classes: int, formats: list[str]) -> dict:
    """What a deployment needs to call the exports (models/export/signature.json)."""
    return {
        "input": {
            "name": "image",
            "shape": [None, image_size, image_size, channels],
            "dtype": "uint8",
            "pixels": "0-255, resized as the training decoder resizes (bilinear)",
        },
        "output": {
            "shape": [None, classes],
            "dtype": "float32",
            "meaning": "class probabilities, in the order of labels.json",
        },
        "files": {fmt: FILES[fmt] for fmt in formats},
    }


def size_bytes(path: Path) -> int:
    """A file's size, or a folder's (SavedModel) summed over its files."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
