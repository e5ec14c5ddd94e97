import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.dataset import image_dataset, label_indices
from pipeline.files import link_or_copy
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
