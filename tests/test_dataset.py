import numpy as np
import pandas as pd
import pytest

from pipeline.dataset import image_dataset, label_indices
from pipeline.split import build_manifest


def test_unknown_class_is_an_error():
    with pytest.raises(ValueError, match=r"classes \['yak'\] are in the manifest but not in"):
        label_indices(pd.Series(["cat", "yak"]), ["cat", "dog"])


def test_dataset_keeps_manifest_order_and_labels(image_tree, tmp_path):
    manifest = build_manifest(image_tree, 0.2, 0.2, seed=0)
    # the split folder layout, built the way the split stage builds it
    for row in manifest.itertuples():
        target = tmp_path / "split" / row.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((image_tree / row.raw_path).read_bytes())
    classes = ["cat", "dog", "owl"]
    rows = manifest.sample(frac=1, random_state=1).reset_index(drop=True)
    data = image_dataset(
        rows, classes, image_size=8, channels=1, batch_size=7, root=tmp_path / "split"
    )
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in data], strict=True)
    images, labels = np.concatenate(images), np.concatenate(labels)
    assert images.shape == (30, 8, 8, 1) and images.dtype == np.float32
    assert labels.argmax(axis=1).tolist() == label_indices(rows["label"], classes)
    # 8x8 in, 8x8 out: the pixels are the file's own
    expected = np.asarray(__import__("PIL.Image").Image.open(tmp_path / "split" / rows["path"][4]))
    np.testing.assert_allclose(images[4, :, :, 0], expected)
