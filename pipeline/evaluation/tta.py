"""Test-time augmentation: the model's probabilities averaged over a few views of each test
image (`evaluate.tta`), reported beside the plain score, which stays the headline (the model
as it is deployed sees one view).

- flip: the image and its left-right mirror (for data trained with horizontal flips);
- shift: the image and its four one-pixel shifts (edges repeated);
- flip_shift: both, ten views.
"""

import numpy as np
import pandas as pd
import tensorflow as tf

from pipeline.imagedata.dataset import image_dataset
from pipeline.paths import SPLIT_DIR
from pipeline.serving.inference import Classifier


def _shift(dy: int, dx: int):
    def view(images: tf.Tensor) -> tf.Tensor:  # a batch, moved by (dy, dx), edges repeated
        height, width = tf.shape(images)[1], tf.shape(images)[2]
        padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="SYMMETRIC")
        return padded[:, 1 - dy : 1 - dy + height, 1 - dx : 1 - dx + width]

    return view


SHIFTS = [_shift(dy, dx) for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1))]
VIEWS = {
    "flip": [tf.image.flip_left_right],
    "shift": SHIFTS,
    "flip_shift": [tf.image.flip_left_right, *SHIFTS]
    + [lambda x, s=s: s(tf.image.flip_left_right(x)) for s in SHIFTS],
}


def views(kind: str) -> list:
    """The transformations of a uint8 batch that TTA `kind` averages over, the identity first."""
    return [lambda x: x, *VIEWS[kind]]


def predict_tta(
    classifier: Classifier, rows: pd.DataFrame, batch_size: int, kind: str, root=SPLIT_DIR
) -> np.ndarray:
    """Probabilities for manifest `rows`, each the mean over the views of `kind`."""
    # decoded once: the in-memory cache is shared by every view's dataset made from it
    data = image_dataset(
        rows, classifier.classes, classifier.image_size, classifier.channels, batch_size,
        root=root, cache="memory",
    )  # fmt: skip
    every = views(kind)
    viewed = [data.map(lambda x, y, view=view: (view(x), y)) for view in every]
    return sum(classifier.model.predict(batches, verbose=0) for batches in viewed) / len(every)
