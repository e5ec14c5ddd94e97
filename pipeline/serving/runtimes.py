"""An exported model run by its own runtime: ONNX Runtime, the LiteRT interpreter, or
TensorFlow's SavedModel loader (the signature TF Serving calls).

Each is shaped like the Keras model where `inference.Classifier` touches it (`input_shape`,
`output_shape`, `predict_on_batch`), so predicting with an export is the same code path as
predicting with the `.keras` file. Each runtime is imported when its format is first loaded.
"""

import os
import re
from pathlib import Path

import numpy as np

from pipeline.common.native import native_stderr

# the formats a path stands for, by its name; a folder holding saved_model.pb is a SavedModel
SUFFIXES = {".onnx": "onnx", ".tflite": "tflite", ".keras": "keras"}
SAVED_MODEL_FILE = "saved_model.pb"
# what LiteRT and its converter print from C++ whatever goes right (the delegate it created, the
# quantiser's settings); a real error still shows
LITERT_NOISE = re.compile(rb"^INFO: Created TensorFlow Lite|^fully_quantize: \d")


def format_of(path: Path) -> str | None:
    """`onnx`, `tflite`, `saved_model` or `keras` by the path's name; None when it is none."""
    if path.is_dir() and (path / SAVED_MODEL_FILE).is_file():
        return "saved_model"
    return SUFFIXES.get(path.suffix)


def threads() -> int:
    """Every core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class OnnxModel:
    """An `.onnx` file in ONNX Runtime (CPU)."""

    def __init__(self, path: Path):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads()
        options.log_severity_level = 3  # errors only
        # idle threads sleep rather than spin: the CLI reads the next batch on the same cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        given, answer = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name = given.name
        self.dtype = np.uint8 if given.type == "tensor(uint8)" else np.float32
        self.input_shape = (None, *given.shape[1:])
        self.output_shape = (None, answer.shape[-1])

    def predict_on_batch(self, images: np.ndarray) -> np.ndarray:
        feed = {self.input_name: np.ascontiguousarray(images, dtype=self.dtype)}
        return self.session.run(None, feed)[0]


class LiteRtModel:
    """A `.tflite` file in the LiteRT interpreter (XNNPACK on the CPU). Its input is resized
    to each batch; a quantised output is dequantised."""

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=threads())
        self.given = self.interpreter.get_input_details()[0]
        self.answer = self.interpreter.get_output_details()[0]
        self.input_shape = (None, *(int(n) for n in self.given["shape"][1:]))
        self.output_shape = (None, int(self.answer["shape"][-1]))
        self.batch = 0

    def predict_on_batch(self, images: np.ndarray) -> np.ndarray:
        interpreter = self.interpreter
        if len(images) != self.batch:
            interpreter.resize_tensor_input(self.given["index"], images.shape, strict=True)
            with native_stderr(LITERT_NOISE):  # "INFO: Created ... XNNPACK delegate"
                interpreter.allocate_tensors()
            self.answer = interpreter.get_output_details()[0]
            self.batch = len(images)
        interpreter.set_tensor(self.given["index"], images.astype(self.given["dtype"]))
        interpreter.invoke()
        output = interpreter.get_tensor(self.answer["index"]).astype(np.float32)
        scale, zero_point = self.answer["quantization"]
        return (output - zero_point) * scale if scale else output


class SavedModelModel:
    """A SavedModel folder, through its `serving_default` signature (what TF Serving calls)."""

    def __init__(self, path: Path):
        import tensorflow as tf

        self.tf = tf
        self.function = tf.saved_model.load(str(path)).signatures["serving_default"]
        ((self.input_name, given),) = self.function.structured_input_signature[1].items()
        ((self.output_name, answer),) = self.function.structured_outputs.items()
        self.dtype = given.dtype
        self.input_shape = tuple(given.shape)
        self.output_shape = tuple(answer.shape)

    def predict_on_batch(self, images: np.ndarray) -> np.ndarray:
        batch = self.tf.constant(images, dtype=self.dtype)
        return self.function(**{self.input_name: batch})[self.output_name].numpy()


RUNTIMES = {"onnx": OnnxModel, "tflite": LiteRtModel, "saved_model": SavedModelModel}


def load_exported(path: Path) -> OnnxModel | LiteRtModel | SavedModelModel:
    """The exported model at `path` in its runtime (`format_of` says which)."""
    return RUNTIMES[format_of(path)](path)
