import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from pipeline.imagedata.images import list_images
from pipeline.ingest import copy_folder, resolve_source, write_digits
from tests.conftest import write_png


def test_write_digits_materialises_every_scan(tmp_path):
    assert write_digits(tmp_path) == 1797
    listing = list_images(tmp_path)
    assert len(listing) == 1797
    assert listing["label"].value_counts().sort_index().index.tolist() == [
        str(d) for d in range(10)
    ]
    digits = load_digits()
    with Image.open(tmp_path / str(digits.target[5]) / "0005.png") as image:
        assert image.mode == "L" and image.size == (8, 8)
        pixels = np.asarray(image)
    np.testing.assert_array_equal(pixels, np.rint(digits.images[5] * 255 / 16).astype(np.uint8))


def test_copy_folder_copies_classes_without_hidden_files(image_tree, tmp_path):
    (image_tree / "cat" / ".DS_Store").write_bytes(b"junk")
    target = tmp_path / "raw"
    assert copy_folder(image_tree, target) == 30
    assert not (target / "cat" / ".DS_Store").exists()
    assert (target / "owl" / "9.png").read_bytes() == (image_tree / "owl" / "9.png").read_bytes()


def test_copy_folder_rejects_a_folder_without_classes(tmp_path):
    write_png(tmp_path / "loose.png", 1)  # an image, but not in a class folder
    with pytest.raises(ValueError, match="holds no class folder with files in it"):
        copy_folder(tmp_path, tmp_path / "raw")


def test_missing_source_folder_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=f"ingest.source = '{missing}': folder {missing}"):
        resolve_source(str(missing))


def test_copy_folder_does_not_follow_links_out_of_the_source(image_tree, tmp_path, caplog):
    secret = write_png(tmp_path / "private" / "secret.png", 77)
    (image_tree / "cat" / "link.png").symlink_to(secret)
    target = tmp_path / "raw"
    assert copy_folder(image_tree, target) == 30
    assert not (target / "cat" / "link.png").exists()
    assert "not copied: cat/link.png: symbolic link pointing outside" in caplog.text


def test_ingest_classes_takes_only_the_named_classes_and_names_a_missing_one(image_tree, tmp_path):
    assert write_digits(tmp_path / "digits", ["5", "7"]) == 182 + 179
    assert sorted(p.name for p in (tmp_path / "digits").iterdir()) == ["5", "7"]
    assert copy_folder(image_tree, tmp_path / "raw", ["owl"]) == 10
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["owl"]
    with pytest.raises(ValueError, match=r"ingest.classes names \['yak'\], which .* does not have"):
        copy_folder(image_tree, tmp_path / "other", ["owl", "yak"])
    with pytest.raises(ValueError, match=r"its classes: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9"):
        write_digits(tmp_path / "more", ["10"])


def test_ingest_classes_may_be_numbers_in_yaml(raw_params):
    from pipeline.params import parse_params

    raw_params["ingest"]["classes"] = [5, 6]
    assert parse_params(raw_params).ingest.classes == ["5", "6"]
