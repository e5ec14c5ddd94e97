"""`tf.data` input pipelines over the split manifest.

The manifest fixes the file order and the labels file fixes the class order, so training,
evaluation and every later report agree on which index means which class.
"""

from pathlib import Path

import pandas as pd
import tensorflow as tf

from pipeline.files import read_json
from pipeline.manifest import read_manifest
from pipeline.paths import LABELS_FILE, SPLIT_DIR, SPLIT_MANIFEST


def read_classes(path: Path = LABELS_FILE) -> list[str]:
    return list(read_json(path)["classes"])


def read_split(split: str, manifest_path: Path = SPLIT_MANIFEST) -> pd.DataFrame:
    """Manifest rows of one split, in manifest order."""
    manifest = read_manifest(manifest_path)
    return manifest[manifest["split"] == split].reset_index(drop=True)


def label_indices(labels: pd.Series, classes: list[str]) -> list[int]:
    """Class names to indices in the labels-file order; an unknown class is an error."""
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(labels) - index.keys())
    if unknown:
        raise ValueError(f"classes {unknown} are in the manifest but not in {LABELS_FILE.name}")
    return [index[name] for name in labels]


def decode_image(path: tf.Tensor, image_size: int, channels: int) -> tf.Tensor:
    """File to a float32 (size, size, channels) tensor with values in 0..255."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
    image.set_shape([None, None, channels])
    return tf.image.resize(image, [image_size, image_size])


def image_dataset(
    rows: pd.DataFrame,
    classes: list[str],
    image_size: int,
    channels: int,
    batch_size: int,
    shuffle_seed: int | None = None,
    root: Path = SPLIT_DIR,
) -> tf.data.Dataset:
    """Batches of (image, one-hot label); shuffled only when a seed is given."""
    paths = [str(root / p) for p in rows["path"]]
    labels = tf.one_hot(label_indices(rows["label"], classes), depth=len(classes))
    dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
    dataset = dataset.map(
        lambda path, label: (decode_image(path, image_size, channels), label),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    ).cache()
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
