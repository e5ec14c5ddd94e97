"""MixUp and CutMix on the training batches: each batch mixed with a shuffled copy of itself,
its one-hot labels in the same proportion (Keras' `MixUp` and `CutMix` layers, in `tf.data`).

The model takes uint8 images, so mixed images are rounded back to uint8 (half a grey level at
most). With both set, each batch gets one of the two, drawn from the batch's number and the
seed. The layers keep their random state inside `tf.data`: a resumed run draws its mixes
afresh, so with mixing on it is not bit-identical to an uninterrupted one.
"""

import tensorflow as tf
from keras import layers

from pipeline.params import AugmentationParams


def mixes(cfg: AugmentationParams) -> list[str]:
    return [name for name in ("mixup", "cutmix") if getattr(cfg, name)]


def mixed(dataset: tf.data.Dataset, cfg: AugmentationParams, seed: int) -> tf.data.Dataset:
    """`dataset` (batches of uint8 images and one-hot labels) with MixUp and/or CutMix; the
    dataset itself when both are off."""
    chosen = mixes(cfg)
    if not chosen:
        return dataset
    mixers = {
        "mixup": layers.MixUp(alpha=cfg.mixup, seed=seed + 6),
        "cutmix": layers.CutMix(factor=cfg.cutmix, seed=seed + 7),
    }

    def apply(name: str, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        out = mixers[name]({"images": tf.cast(images, tf.float32), "labels": labels})
        image = tf.cast(tf.round(tf.clip_by_value(out["images"], 0, 255)), images.dtype)
        return image, tf.cast(out["labels"], labels.dtype)

    def mix(index: tf.Tensor, batch: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        images, labels = batch
        if len(chosen) == 1:
            return apply(chosen[0], images, labels)
        coin = tf.random.stateless_uniform([], seed=tf.stack([tf.cast(seed, tf.int64), index]))
        return tf.cond(
            coin < 0.5,
            lambda: apply("mixup", images, labels),
            lambda: apply("cutmix", images, labels),
        )

    mixed_batches = dataset.enumerate().map(mix, num_parallel_calls=1, deterministic=True)
    return mixed_batches.prefetch(tf.data.AUTOTUNE)
