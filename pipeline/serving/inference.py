"""The one inference path: load a trained model from its files (a `.keras` file or an export;
an MLflow model URI is `tracking.registry`'s to fetch),
check that it predicts exactly the classes it is asked for, turn image files into the arrays
it takes, predict batches, and build the prediction table. Evaluate, visualize, predict, the
served pyfunc model and transfer learning all load and predict through here.

New files go through the very conversion the split applies (`images.model_ready`: EXIF
orientation, transparency composited, CMYK and 16-bit converted) and the training decoder's
arithmetic (`dataset.decode_contents`), so a picture is seen exactly as the test split was.
Batches are decoded together: a PNG (lossless: Pillow's pixels are TensorFlow's) is read by
Pillow and resized with the images of its size in one operation, a JPEG by the training
decoder's own graph (its scaled DCT decoding is TensorFlow's).

The model may also be an export (`.onnx`, `.tflite`, a SavedModel folder), run by its own
runtime (`serving.runtimes`).
"""

import io
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from PIL import Image

from pipeline.common.log import PipelineError
from pipeline.contracts import DEFAULT_MAX_PIXELS, WHITE, ContractError, Labels, read_labels
from pipeline.imagedata.dataset import JPEG_MAGIC, decode_contents, image_dataset, resize
from pipeline.imagedata.images import Rules, model_ready
from pipeline.paths import SPLIT_DIR
from pipeline.serving.runtimes import RUNTIMES, format_of, load_exported
from pipeline.serving.views import with_views


class ModelNotFoundError(PipelineError, FileNotFoundError):
    """No model where the user pointed, or none trained yet; the message says which file."""


class ModelMismatchError(PipelineError, ValueError):
    """The model is unreadable, or was trained on other classes than it is asked for."""


def load_keras_model(path: Path) -> keras.Model:
    """A `.keras` file, with a message that names it when it is missing or unreadable. Only
    Keras' own zip format is read, in safe mode: an `.h5` or SavedModel file (which can run
    code as it loads), a pickle under any name, or a model with a Lambda layer is refused."""
    if not path.is_file():
        raise ModelNotFoundError(f"model file {path} is missing: train one with `make run`")
    if path.suffix != ".keras":
        raise ModelMismatchError(
            f"model file {path} is not a .keras file: only Keras' zip format is loaded, in "
            "safe mode (.h5, SavedModel and pickled models can run code as they load)"
        )
    if not zipfile.is_zipfile(path):  # never handed to a loader that might unpickle it
        raise ModelMismatchError(
            f"model file {path} cannot be loaded (not a Keras zip archive: truncated, or "
            "another format under the name); it is corrupt or not a Keras model: retrain "
            "with `dvc repro --force train`"
        )
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as error:  # zip, h5 or deserialisation errors: all mean the same here
        raise ModelMismatchError(
            f"model file {path} cannot be loaded ({type(error).__name__}: {error}); "
            "it is corrupt or not a Keras model: retrain with `dvc repro --force train`"
        ) from error


def load_model_file(path: Path):
    """A `.keras` file (`load_keras_model`), or an export in its runtime."""
    fmt = format_of(path)
    if fmt not in RUNTIMES:
        return load_keras_model(path)
    if not path.exists():
        raise ModelNotFoundError(f"exported model {path} is missing: export it with `make run`")
    try:
        return load_exported(path)
    except Exception as error:  # each runtime has its own errors; all mean the same here
        raise ModelMismatchError(
            f"exported model {path} cannot be loaded by its runtime ({type(error).__name__}: "
            f"{error}): export it again with `dvc repro --force export`"
        ) from error


@dataclass
class Classifier:
    """A trained model with what it needs to take an image file: its class names, its input
    size and channels, and the background transparent pixels were composited on in its split.
    `model` is a Keras model or an exported one in its runtime (`serving.runtimes`)."""

    model: keras.Model
    classes: list[str]
    background: tuple[int, int, int] = WHITE
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are refused before decoding
    max_side: int | None = None  # a new image is stored at this working size, as in the split
    jpeg_quality: int = 90  # ... a JPEG re-encoded at this quality
    # the views a Keras model's probabilities are averaged over (train.test_time_views); an
    # export carries them inside
    views: str = "none"
    _decode: object = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        _, height, width, self.channels = self.model.input_shape
        if height != width:
            raise ModelMismatchError(
                f"the model takes {height}x{width} images; only square ones work"
            )
        self.image_size = int(height)
        outputs = self.model.output_shape[-1]
        if outputs != len(self.classes):
            raise ModelMismatchError(
                f"the model has {outputs} outputs for {len(self.classes)} classes"
            )
        # what answers: the Keras network with its test-time views, or an export (views inside)
        keras_model = isinstance(self.model, keras.Model)
        self.predictor = with_views(self.model, self.views) if keras_model else self.model

    @classmethod
    def from_files(cls, model_file: Path, labels_file: Path | None = None) -> "Classifier":
        """A `.keras` file (or an export) and the labels file written beside it."""
        labels_file = labels_file or model_file.with_name("labels.json")
        model = load_model_file(model_file)  # names the model file when it is missing
        if not labels_file.exists():
            raise ModelNotFoundError(
                f"class names {labels_file} is missing (the classes of {model_file.name}): "
                "train one with `make run`"
            )
        try:
            return cls.from_labels(model, read_labels(labels_file, writer="train"))
        except ContractError as error:
            raise ModelMismatchError(str(error)) from None

    @classmethod
    def from_labels(cls, model: keras.Model, labels: Labels) -> "Classifier":
        try:
            return cls(
                model,
                list(labels.classes),
                tuple(labels.background),
                labels.max_image_pixels,
                labels.max_image_size,
                labels.jpeg_quality,
                labels.test_time_views,
            )
        except ModelMismatchError as error:
            raise ModelMismatchError(f"{error} (classes: {labels.classes})") from None

    def check_classes(self, classes: list[str], source: str, labels_file: str) -> None:
        """Stop unless the model predicts exactly `classes`, in that order (`labels_file`
        names where they come from; `source`, the model)."""
        if self.classes == classes:
            return
        missing = [c for c in classes if c not in self.classes]
        unknown = [c for c in self.classes if c not in classes]
        detail = (
            f"classes in {Path(labels_file).name} the model does not know: {missing}; "
            f"classes the model knows that {Path(labels_file).name} lacks: {unknown}"
            if missing or unknown
            else "same classes in another order"
        )
        raise ModelMismatchError(
            f"{source} was trained on {len(self.classes)} classes that do not match the "
            f"{len(classes)} of {labels_file} ({detail}): retrain with `dvc repro train`"
        )

    @property
    def rules(self) -> Rules:
        """The split's rules a new image is stored by (`images.model_ready`)."""
        return Rules(
            self.max_pixels,
            max_side=self.max_side,
            background=self.background,
            jpeg_quality=self.jpeg_quality,
        )

    @property
    def labels(self) -> Labels:
        """What labels.json says of this model (as the split wrote it)."""
        return Labels(
            self.classes,
            self.background,
            self.max_pixels,
            self.max_side,
            self.jpeg_quality,
            self.views,
        )

    def ready(self, data: bytes) -> bytes:
        """A file's bytes as the split would have written them (`images.model_ready`); raises
        UnreadableImageError with the reason."""
        return model_ready(data, self.channels, self.rules)[0]

    def images(self, contents: list[bytes]) -> np.ndarray:
        """`ready` files to the (n, size, size, channels) uint8 batch the model takes, each
        exactly as the training decoder decodes it."""
        size = self.image_size
        batch = np.empty((len(contents), size, size, self.channels), np.uint8)
        by_shape = defaultdict(list)  # PNGs to resize, by their size
        for row, data in enumerate(contents):
            if data[:3] == JPEG_MAGIC:
                batch[row] = self._jpeg(tf.constant(data)).numpy()
                continue
            with Image.open(io.BytesIO(data)) as image:
                pixels = np.asarray(image)
            pixels = pixels[..., np.newaxis] if pixels.ndim == 2 else pixels
            if pixels.shape[:2] == (size, size):
                batch[row] = pixels
            else:
                by_shape[pixels.shape].append((row, pixels))
        for found in by_shape.values():
            rows, pictures = zip(*found, strict=True)
            batch[list(rows)] = resize(tf.constant(np.stack(pictures)), size).numpy()
        return batch

    def _jpeg(self, contents: tf.Tensor) -> tf.Tensor:
        if self._decode is None:  # traced once, on the first JPEG
            size, channels = self.image_size, self.channels
            self._decode = tf.function(
                lambda data: decode_contents(data, size, channels),
                input_signature=[tf.TensorSpec([], tf.string)],
            )
        return self._decode(contents)

    def pixels(self, data: bytes) -> np.ndarray:
        """One file's bytes to the (size, size, channels) uint8 array the model takes."""
        return self.images([self.ready(data)])[0]

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """A batch of uint8 images (already at the model's size) to class probabilities."""
        return np.asarray(self.predictor.predict_on_batch(images), dtype=np.float64)

    def predict_rows(
        self, rows: pd.DataFrame, batch_size: int, root: Path = SPLIT_DIR, one_view: bool = False
    ) -> np.ndarray:
        """Class probabilities for manifest `rows` (files under `root`), row i for file i:
        the training decoder in an unshuffled, uncached `tf.data` pipeline, in batches. With
        `one_view`, a Keras model's answer without its test-time views."""
        data = image_dataset(
            rows, self.classes, self.image_size, self.channels, batch_size, root=root, cache="off"
        )
        if isinstance(self.model, keras.Model):
            model = self.model if one_view else self.predictor
            probabilities = model.predict(data, verbose=0)
        else:  # an export: its runtime, batch by batch
            parts = [self.probabilities(images.numpy()) for images, _ in data]
            probabilities = np.concatenate(parts) if parts else np.empty((0, len(self.classes)))
        if len(probabilities) != len(rows):
            raise RuntimeError(f"{len(probabilities)} predictions for {len(rows)} images")
        return probabilities


def load_checked(
    model_file: Path, model_labels: Path, classes: list[str], labels_file: Path
) -> Classifier:
    """The trained model, once it is known to read and to predict exactly `classes` (those
    of `labels_file`) in that order."""
    classifier = Classifier.from_files(model_file, model_labels)
    classifier.check_classes(classes, str(model_file), str(labels_file))
    return classifier


def load_classifier(source: str | Path) -> Classifier:
    """A `.keras` file or an export (`.onnx`, `.tflite`, a SavedModel folder; class names from
    `labels.json` beside it), or a folder holding `model.keras`. (An MLflow model URI:
    `tracking.registry.load_classifier`.)"""
    path = Path(source)
    plain_folder = path.is_dir() and format_of(path) is None
    return Classifier.from_files(path / "model.keras" if plain_folder else path)


def prediction_table(
    probabilities: np.ndarray, classes: list[str], top_k: int = 0, probabilities_of: bool = True
) -> pd.DataFrame:
    """One row per image: the predicted class, its probability, the `top_k` best classes with
    theirs, and (`probabilities_of`) one `p_<class>` column per class."""
    names = np.asarray(classes, dtype=object)
    best = probabilities.argmax(axis=1)
    table = pd.DataFrame({"predicted": names[best], "confidence": probabilities.max(axis=1)})
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    for rank in range(order.shape[1]):
        table[f"top_{rank + 1}"] = names[order[:, rank]]
        table[f"top_{rank + 1}_probability"] = probabilities[np.arange(len(best)), order[:, rank]]
    if probabilities_of:
        for index, name in enumerate(classes):
            table[f"p_{name}"] = probabilities[:, index]
    return table
