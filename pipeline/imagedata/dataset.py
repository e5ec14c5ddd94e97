"""`tf.data` input pipelines over the split manifest.

The manifest fixes the file order and the labels file fixes the class order, so training,
evaluation and every later report agree on which index means which class.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from pipeline.imagedata.manifest import read_manifest
from pipeline.paths import LABELS_FILE, SPLIT_DIR, SPLIT_MANIFEST


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


JPEG_MAGIC = b"\xff\xd8\xff"


def decode_image(path: tf.Tensor, image_size: int, channels: int) -> tf.Tensor:
    """File to a uint8 (size, size, channels) tensor, resized as the model expects it.

    A JPEG much larger than `image_size` is decoded at 1/2, 1/4 or 1/8 scale in the DCT domain
    (libjpeg's scaled decoding, as Pillow's `draft`): a large source costs a fraction of a full
    decode, and the bilinear resize that follows shrinks by less than 2x, so it does not alias.
    """
    return decode_contents(tf.io.read_file(path), image_size, channels)


def decode_contents(contents: tf.Tensor, image_size: int, channels: int) -> tf.Tensor:
    """`decode_image` for a file's bytes already in memory (prediction, serving)."""
    image = tf.cond(
        tf.equal(tf.strings.substr(contents, 0, 3), JPEG_MAGIC),
        lambda: decode_jpeg_scaled(contents, image_size, channels),
        lambda: _decode_other(contents, channels),
    )
    image.set_shape([None, None, channels])
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    sized = tf.cond(  # a source already at the model's size skips the (identity) resize
        tf.logical_and(tf.equal(height, image_size), tf.equal(width, image_size)),
        lambda: image,
        lambda: resize(image, image_size),
    )
    # the shape is fixed after the branches, not inside one: in a tf.function (not in a
    # tf.data map) the branch not taken ran its check too and failed on every resized image
    return tf.ensure_shape(sized, [image_size, image_size, channels])


def _decode_other(contents: tf.Tensor, channels: int) -> tf.Tensor:
    return tf.io.decode_image(contents, channels=channels, expand_animations=False)


def decode_full(contents: tf.Tensor, channels: int) -> tf.Tensor:
    """The training decoder's own ops (`decode_contents`) at full scale, without the resize:
    what the gate decodes every file of the split with."""
    image = tf.cond(
        tf.equal(tf.strings.substr(contents, 0, 3), JPEG_MAGIC),
        lambda: tf.io.decode_jpeg(contents, channels=channels),
        lambda: _decode_other(contents, channels),
    )
    image.set_shape([None, None, channels])
    return image


def decoder_failures(root: Path, paths: list[str], channels: int) -> dict[str, str]:
    """The files (`paths` under `root`) the training decoder refuses at `channels`, each with
    the decoder's message: all decoded in a parallel `tf.data` pipeline, the failures then
    decoded again one by one for their message."""
    files = [str(root / path) for path in paths]
    data = tf.data.Dataset.from_tensor_slices((tf.range(len(files), dtype=tf.int64), files))
    data = data.map(
        lambda index, file: (index, tf.shape(decode_full(tf.io.read_file(file), channels))),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=False,
    )
    decoded = {int(i) for i, _ in data.ignore_errors().as_numpy_iterator()} if files else set()
    failures = {}
    for index in sorted(set(range(len(files))) - decoded):
        try:
            decode_full(tf.io.read_file(files[index]), channels)
        except tf.errors.OpError as error:
            failures[paths[index]] = error.message.splitlines()[0]
    return failures


def resize(image: tf.Tensor, image_size: int) -> tf.Tensor:
    resized = tf.image.resize(image, [image_size, image_size])
    return tf.cast(tf.round(tf.clip_by_value(resized, 0, 255)), tf.uint8)


def decode_jpeg_scaled(contents: tf.Tensor, image_size: int, channels: int) -> tf.Tensor:
    """The JPEG decoded at the smallest of scales 1, 1/2, 1/4, 1/8 that keeps both sides at
    least `image_size` (the header alone gives the size)."""
    shortest = tf.reduce_min(tf.io.extract_jpeg_shape(contents)[:2])
    halvings = tf.add_n([tf.cast(shortest >= image_size * r, tf.int32) for r in (2, 4, 8)])
    return tf.switch_case(
        halvings,
        [lambda r=2**k: tf.io.decode_jpeg(contents, channels=channels, ratio=r) for k in range(4)],
    )


def decoded_files(files: tf.data.Dataset, image_size: int, channels: int) -> tf.data.Dataset:
    """(path, label) pairs to (image, label), decoded in parallel, in order."""
    return files.map(
        lambda path, label: (decode_image(path, image_size, channels), label),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )


def cached_dataset(decoded: tf.data.Dataset, cache: str | Path) -> tf.data.Dataset:
    """`decoded`, kept after its first pass in memory or in files under the prefix `cache`."""
    if cache == "memory":
        return decoded.cache()
    Path(cache).parent.mkdir(parents=True, exist_ok=True)
    for stale in Path(cache).parent.glob(f"{Path(cache).name}*.lockfile"):
        stale.unlink()  # left by a run that was killed while writing
    return decoded.cache(str(cache))


def image_dataset(
    rows: pd.DataFrame,
    classes: list[str],
    image_size: int,
    channels: int,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    root: Path = SPLIT_DIR,
    cache: str | Path = "memory",
    first_epoch: int = 0,
) -> tf.data.Dataset:
    """Batches of (uint8 image, one-hot label), decoded in parallel.

    Without a seed: one pass in `rows` order. With a seed: shuffled reproducibly and repeated
    without end (give `fit` its `steps_per_epoch`), starting at epoch `first_epoch` (counted
    from 0). Each epoch's order is a function of the seed and the epoch number alone, so a
    training resumed at epoch k sees exactly the batches an uninterrupted one sees from k on.

    With a cache, epoch 0 decodes the files in a shuffled order while the model trains on them
    and fills the cache on the way; every later epoch shuffles the cached images with a seed of
    its own. (A full-size shuffle buffer before epoch 0 would make it wait until every file is
    decoded before its first step.) A dataset that starts at a later epoch pays that wait
    once: its first epoch fills the cache before it shuffles.

    `cache`: "memory", "off", or a file path prefix for an on-disk cache of the decoded images.
    """
    paths = [str(root / p) for p in rows["path"]]
    labels = tf.one_hot(label_indices(rows["label"], classes), depth=len(classes))
    files = tf.data.Dataset.from_tensor_slices((paths, labels))

    if shuffle_seed is None:
        decoded = decoded_files(files, image_size, channels)
        decoded = decoded if cache == "off" else cached_dataset(decoded, cache)
        return decoded.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    count = len(paths)
    epochs = tf.data.Dataset.range(first_epoch, tf.int64.max)
    if cache == "off":  # shuffling paths costs nothing; every epoch decodes its files again
        dataset = epochs.flat_map(
            lambda epoch: decoded_files(
                files.shuffle(count, seed=shuffle_seed + epoch, reshuffle_each_iteration=False),
                image_size,
                channels,
            ).batch(batch_size)
        )
        return dataset.prefetch(tf.data.AUTOTUNE)

    shuffled = files.shuffle(count, seed=shuffle_seed, reshuffle_each_iteration=False)
    decoded = cached_dataset(decoded_files(shuffled, image_size, channels), cache)
    # the same `decoded` object throughout: every epoch after the first reads its cache
    later = epochs.filter(lambda epoch: epoch > 0).flat_map(
        lambda epoch: decoded.shuffle(
            count, seed=shuffle_seed + epoch, reshuffle_each_iteration=False
        ).batch(batch_size)
    )
    dataset = decoded.batch(batch_size).concatenate(later) if first_epoch == 0 else later
    return dataset.prefetch(tf.data.AUTOTUNE)


def load_images(
    rows: pd.DataFrame, classes: list[str], image_size: int, channels: int, root: Path = SPLIT_DIR
) -> np.ndarray:
    """The images of `rows` as one uint8 array (N x size x size x channels), decoded and
    resized exactly as training and evaluation decode them."""
    batches = image_dataset(rows, classes, image_size, channels, 512, root=root, cache="off")
    parts = [images.numpy() for images, _ in batches]
    empty = np.empty((0, image_size, image_size, channels), np.uint8)
    return np.concatenate(parts).astype(np.uint8) if parts else empty
