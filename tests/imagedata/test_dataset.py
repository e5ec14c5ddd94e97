import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.common.files import link_or_copy
from pipeline.imagedata.dataset import image_dataset, label_indices
from tests.conftest import split_table


def test_unknown_class_is_an_error():
    with pytest.raises(ValueError, match=r"classes \['yak'\] are in the manifest but not in"):
        label_indices(pd.Series(["cat", "yak"]), ["cat", "dog"])


def test_dataset_keeps_manifest_order_and_labels(image_tree, tmp_path):
    manifest = split_table(image_tree)
    for row in manifest.itertuples():  # the split folder layout, as the split stage makes it
        link_or_copy(image_tree / row.raw_path, tmp_path / "split" / row.path)
    classes = ["cat", "dog", "owl"]
    rows = manifest.sample(frac=1, random_state=1).reset_index(drop=True)
    data = image_dataset(
        rows, classes, image_size=8, channels=1, batch_size=7, root=tmp_path / "split"
    )
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in data], strict=True)
    images, labels = np.concatenate(images), np.concatenate(labels)
    assert images.shape == (30, 8, 8, 1) and images.dtype == np.uint8
    assert labels.argmax(axis=1).tolist() == label_indices(rows["label"], classes)
    # 8x8 in, 8x8 out: image i holds exactly the pixels of file i
    expected = np.stack([np.asarray(Image.open(tmp_path / "split" / p)) for p in rows["path"]])
    np.testing.assert_array_equal(images[..., 0], expected)


def test_a_large_jpeg_is_decoded_at_reduced_scale_like_an_antialiased_resize(tmp_path):
    from PIL import Image

    from pipeline.imagedata.dataset import decode_image

    rng = np.random.default_rng(0)
    # fine detail (2-px noise): a full decode + bilinear 8x shrink aliases it (~25 grey levels
    # off a box-filtered resize), decoding at 1/8 scale averages it as the box filter does
    stripes = np.kron(rng.integers(0, 256, (256, 256), dtype=np.uint8), np.ones((2, 2), np.uint8))
    big = tmp_path / "big.jpg"
    Image.fromarray(stripes).convert("RGB").save(big, quality=95)  # 512 x 512
    reference = np.asarray(Image.open(big).convert("RGB").resize((64, 64), Image.Resampling.BOX))
    decoded = decode_image(str(big), 64, 3).numpy()
    assert decoded.shape == (64, 64, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - reference).mean() < 1
    # small JPEGs, PNGs and sizes between scales still come out at the model's size
    Image.fromarray(stripes[:100, :90]).save(tmp_path / "odd.png")
    assert decode_image(str(tmp_path / "odd.png"), 64, 1).shape == (64, 64, 1)
    assert decode_image(str(big), 300, 3).shape == (300, 300, 3)


@pytest.mark.parametrize("cache", ["memory", "disk", "off"])
def test_training_passes_hold_every_image_once_reshuffled_and_later_ones_come_from_the_cache(
    image_tree, tmp_path, cache
):
    manifest = split_table(image_tree)
    split = tmp_path / "split"
    for row in manifest.itertuples():
        link_or_copy(image_tree / row.raw_path, split / row.path)
    rows, classes = manifest.reset_index(drop=True), ["cat", "dog", "owl"]
    steps = -(-len(rows) // 7)

    def dataset(name: str, first_epoch: int = 0):
        store = tmp_path / "cache" / name if cache == "disk" else cache
        return image_dataset(
            rows,
            classes,
            image_size=8,
            channels=1,
            batch_size=7,
            root=split,
            shuffle_seed=3,
            cache=store,
            first_epoch=first_epoch,
        )

    def passes(data, count: int) -> list[list[int]]:
        """Each pass as the file indices in the order seen (images identify their file)."""
        batches = iter(data)
        pixels = [np.asarray(Image.open(split / p)).tobytes() for p in rows["path"]]
        seen = []
        for _ in range(count):
            images = np.concatenate([next(batches)[0].numpy() for _ in range(steps)])
            seen.append([pixels.index(image[..., 0].tobytes()) for image in images])
        return seen

    first, second, third = passes(dataset("train"), 3)
    assert sorted(first) == sorted(second) == sorted(third) == list(range(len(rows)))
    assert len({tuple(first), tuple(second), tuple(third)}) == 3  # reshuffled every pass
    assert passes(dataset("again"), 3) == [first, second, third]  # the seed fixes every pass
    # a training resumed at epoch 2 (or 1) sees exactly the uninterrupted run's later passes
    assert passes(dataset("resumed", first_epoch=2), 1) == [third]
    assert passes(dataset("resumed-at-1", first_epoch=1), 2) == [second, third]

    batches = iter(dataset("gone"))
    for _ in range(steps):
        next(batches)
    if cache != "off":  # the first pass filled the cache: the files are no longer read
        for path in rows["path"]:
            (split / path).unlink()
        next(batches)


def test_disk_cache_gives_the_same_batches(image_tree, tmp_path):
    rows = split_table(image_tree)
    rows = rows[rows["split"] != ""].reset_index(drop=True)
    split_dir = tmp_path / "split"

    for row in rows.itertuples():
        link_or_copy(image_tree / row.raw_path, split_dir / row.path)
    classes = ["cat", "dog", "owl"]
    common = dict(image_size=8, channels=1, batch_size=4, root=split_dir)
    memory = image_dataset(rows, classes, cache="memory", **common)
    disk = image_dataset(rows, classes, cache=tmp_path / "cache" / "train", **common)
    for _ in range(2):  # the second pass reads the cache files
        for (a, la), (b, lb) in zip(memory, disk, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
            np.testing.assert_array_equal(la.numpy(), lb.numpy())
    assert any((tmp_path / "cache").iterdir())
