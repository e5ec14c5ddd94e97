"""training.mixing: MixUp and CutMix on the training batches."""

import numpy as np
import pytest
import tensorflow as tf

from pipeline.params import load_params
from pipeline.training.mixing import mixed


def _batches() -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8, 8, 6, 6, 1), dtype=np.uint8)  # 8 batches of 8
    labels = np.eye(4, dtype=np.float32)[rng.integers(0, 4, size=(8, 8))]
    return tf.data.Dataset.from_tensor_slices((images, labels))


def _run(**mixes) -> list[tuple[np.ndarray, np.ndarray]]:
    cfg = load_params().train.augmentation.model_copy(update=mixes)
    return [(x.numpy(), y.numpy()) for x, y in mixed(_batches(), cfg, seed=3)]


def test_off_leaves_the_batches_as_they_are():
    cfg = load_params().train.augmentation.model_copy(update={"mixup": 0.0, "cutmix": 0.0})
    batches = _batches()
    assert mixed(batches, cfg, seed=3) is batches


@pytest.mark.parametrize("mixes", [{"mixup": 0.4}, {"cutmix": 1.0}, {"mixup": 0.4, "cutmix": 1.0}])
def test_mixed_batches_keep_uint8_images_and_labels_that_sum_to_one(mixes):
    original = [(x.numpy(), y.numpy()) for x, y in _batches()]
    batches = _run(**mixes)
    assert len(batches) == len(original)
    soft = 0
    for (images, labels), (before, _) in zip(batches, original, strict=True):
        assert images.dtype == np.uint8 and images.shape == before.shape
        np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-5)
        soft += int(((labels > 0) & (labels < 1)).any())
    assert soft >= 4  # most batches hold mixed labels
    again = _run(**mixes)
    for (a, b), (c, d) in zip(batches, again, strict=True):  # the same seed, the same mixes
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_cutmix_pastes_a_box_and_mixup_blends_everything():
    before = next(iter(_batches()))[0].numpy().astype(int)
    cut = _run(cutmix=1.0)[0][0].astype(int)
    blend = _run(mixup=0.4)[0][0].astype(int)
    kept = (cut == before).mean()
    assert 0.1 < kept < 1.0  # a box came from another image, the rest is its own
    assert (blend == before).mean() < kept
