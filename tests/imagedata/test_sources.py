"""The sources `ingest.source` can name, written to a raw folder."""

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from pipeline.imagedata import sources
from pipeline.imagedata.images import given_splits, list_images, list_raw
from pipeline.imagedata.sources import copy_folder, resolve_source, write_digits
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
    count, skipped = copy_folder(image_tree, target)
    assert count == 30
    assert not (target / "cat" / ".DS_Store").exists()
    assert skipped[["path", "problem"]].values.tolist() == [
        ["cat/.DS_Store", "ignored: hidden file or OS debris"]
    ]
    assert (target / "owl" / "9.png").read_bytes() == (image_tree / "owl" / "9.png").read_bytes()


def test_copy_folder_rejects_a_folder_without_classes(tmp_path):
    write_png(tmp_path / "loose.png", 1)  # an image, but not in a class folder
    with pytest.raises(ValueError, match="holds no class folder with files in it"):
        copy_folder(tmp_path, tmp_path / "raw")


def test_missing_source_folder_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=f"ingest.source = '{missing}': {missing} does not"):
        resolve_source(str(missing))


def test_copy_folder_does_not_follow_links_out_of_the_source(image_tree, tmp_path, caplog):
    secret = write_png(tmp_path / "private" / "secret.png", 77)
    (image_tree / "cat" / "link.png").symlink_to(secret)
    target = tmp_path / "raw"
    assert copy_folder(image_tree, target)[0] == 30
    assert not (target / "cat" / "link.png").exists()
    assert (
        f"not copied: {image_tree / 'cat/link.png'}: symbolic link pointing outside" in caplog.text
    )


def test_ingest_classes_takes_only_the_named_classes_and_names_a_missing_one(image_tree, tmp_path):
    assert write_digits(tmp_path / "digits", ["5", "7"]) == 182 + 179
    assert sorted(p.name for p in (tmp_path / "digits").iterdir()) == ["5", "7"]
    assert copy_folder(image_tree, tmp_path / "raw", ["owl"])[0] == 10
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["owl"]
    with pytest.raises(ValueError, match=r"ingest.classes names \['yak'\], which .* does not have"):
        copy_folder(image_tree, tmp_path / "other", ["owl", "yak"])
    with pytest.raises(ValueError, match=r"its classes: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9"):
        write_digits(tmp_path / "more", ["10"])


def test_ingest_classes_may_be_numbers_in_yaml(raw_params):
    from pipeline.params import parse_params

    raw_params["ingest"]["classes"] = [5, 6]
    assert parse_params(raw_params).ingest.classes == ["5", "6"]


def _idx(path: Path, array: np.ndarray) -> None:
    """`array` (uint8) as a gzipped IDX file, as Zalando and Debian ship them."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def fashion_files(tmp_path, monkeypatch) -> dict[str, np.ndarray]:
    """Tiny IDX files in Fashion-MNIST's names and layout: 30 train and 10 test images."""
    folder = tmp_path / "idx"
    folder.mkdir()
    rng = np.random.default_rng(0)
    made = {}
    for prefix, count in (("train", 30), ("t10k", 10)):
        made[prefix] = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        made[prefix + "-labels"] = np.arange(count) % 10
        _idx(folder / f"{prefix}-images-idx3-ubyte.gz", made[prefix])
        _idx(folder / f"{prefix}-labels-idx1-ubyte.gz", made[prefix + "-labels"])
    monkeypatch.setenv("FASHION_MNIST_DIR", str(folder))
    return made


def test_fashion_mnist_keeps_its_official_split_and_class_names(fashion_files, tmp_path):
    raw = tmp_path / "raw"
    assert sources.write_source("fashion-mnist", raw)[0] == 40
    assert given_splits(raw) == ["train", "test"]
    listing = list_raw(raw)
    assert listing["given_split"].value_counts().to_dict() == {"train": 30, "test": 10}
    assert sorted(listing["label"].unique()) == sorted(sources.FASHION_MNIST_CLASSES)
    with Image.open(raw / "test" / "Ankle boot" / "00009.png") as image:
        assert image.mode == "L" and image.size == (28, 28)
        np.testing.assert_array_equal(np.asarray(image), fashion_files["t10k"][9])
    assert sources.write_source("fashion-mnist", tmp_path / "two", ["Bag", "Coat"])[0] == 4 + 4


def test_missing_fashion_mnist_files_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as error:
        sources.write_source("fashion-mnist", tmp_path / "raw")
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in str(error.value)


def test_a_truncated_idx_file_is_named(fashion_files, tmp_path):
    path = tmp_path / "idx" / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-3]))
    with pytest.raises(ValueError, match=f"{path} holds 7 values, its header says"):
        sources.write_source("fashion-mnist", tmp_path / "raw")


def test_a_folder_of_given_splits_is_copied_split_by_split(tmp_path):
    source = tmp_path / "kaggle"
    for split, count in (("train", 6), ("test", 3)):
        for label in ("cat", "dog"):
            for i in range(count):
                write_png(source / split / label / f"{i}.png", hash((split, label, i)) % 10_000)
    (source / ".DS_Store").write_bytes(b"junk")
    raw = tmp_path / "raw"
    assert copy_folder(source, raw)[0] == 18
    assert given_splits(raw) == ["train", "test"]
    assert copy_folder(source, tmp_path / "dogs", ["dog"])[0] == 9
    with pytest.raises(ValueError, match=r"ingest.classes names \['owl'\]"):
        copy_folder(source, tmp_path / "owls", ["owl"])
    write_png(source / "train" / "owl" / "0.png", 4242)  # a class in one given split only
    assert copy_folder(source, tmp_path / "owls", ["owl"])[0] == 1


@pytest.mark.parametrize(
    ("folders", "given"),
    [
        (["train", "test"], ["train", "test"]),
        (["test", "validation", "train"], ["train", "validation", "test"]),
        (["train", "validation"], []),  # no test: these are classes
        (["train", "test", "cat"], []),  # a class beside them: all are classes
        (["cat", "dog"], []),
    ],
)
def test_given_splits_are_train_and_test_and_maybe_validation_alone(tmp_path, folders, given):
    for name in folders:
        write_png(tmp_path / name / "a" / "0.png", 1)
    assert given_splits(tmp_path) == given


def _labels_file(tmp_path: Path, text: str) -> Path:
    """A labels file beside a folder of six images (a.png ... f.png) in `pictures/`."""
    for n, name in enumerate("abcdef"):
        write_png(tmp_path / "pictures" / f"{name}.png", 500 + n)
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return path


def test_a_labels_file_places_each_listed_image_under_its_label(tmp_path):
    path = _labels_file(
        tmp_path, "path,label\npictures/a.png,cat\npictures/b.png,dog\nother/a.png,cat\n"
    )
    write_png(tmp_path / "other" / "a.png", 77)  # a second a.png for the same class
    raw = tmp_path / "raw"
    assert sources.write_source(str(path), raw)[0] == 3
    assert sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*.png")) == [
        "cat/a-row4.png",
        "cat/a.png",
        "dog/b.png",
    ]
    assert given_splits(raw) == []


def test_a_split_column_gives_the_splits(tmp_path):
    rows = [
        "pictures/a.png,cat,train",
        "pictures/b.png,dog,train",
        "pictures/c.png,cat,test",
        "pictures/d.png,dog,test",
    ]
    path = _labels_file(tmp_path, "path,label,split\n" + "\n".join(rows) + "\n")
    raw = tmp_path / "raw"
    assert sources.write_source(str(path), raw)[0] == 4
    assert given_splits(raw) == ["train", "test"]
    assert (raw / "test" / "dog" / "d.png").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,label\npictures/a.png,cat\n", r"has no column path \(its columns: file, label"),
        ("path,label\npictures/a.png,cat\npictures/z.png,dog\n", "row 3: .*z.png is not a file"),
        ("path,label\npictures/a.png,\n", "row 2: empty label"),
        (
            "path,label,split\npictures/a.png,cat,train\npictures/b.png,cat,tset\n",
            "row 3: split 'tset'",
        ),
    ],
)
def test_a_bad_labels_file_names_the_row(tmp_path, text, message):
    path = _labels_file(tmp_path, text)
    with pytest.raises(ValueError, match=message):
        sources.write_source(str(path), tmp_path / "raw")


def test_the_fingerprint_of_a_labels_file_follows_its_rows_and_files(tmp_path):
    path = _labels_file(tmp_path, "path,label\npictures/a.png,cat\npictures/b.png,dog\n")
    first = sources.fingerprint(str(path))
    assert sources.fingerprint(str(path)) == first
    write_png(tmp_path / "pictures" / "b.png", 9, size=12)  # a listed file changed
    second = sources.fingerprint(str(path))
    assert second["sha256"] != first["sha256"]
    write_png(tmp_path / "pictures" / "f.png", 10, size=12)  # an unlisted file: no change
    assert sources.fingerprint(str(path)) == second
    path.write_text("path,label\npictures/a.png,dog\npictures/b.png,dog\n")  # a relabel
    assert sources.fingerprint(str(path))["sha256"] != second["sha256"]


def test_an_empty_class_folder_added_or_removed_changes_the_fingerprint(image_tree):
    """The fingerprint is ingest's own listing: an empty class folder, which ingest lists and
    the split stops on, counts; a `.DS_Store` does not (BAD_INPUT 23)."""
    first = sources.fingerprint(str(image_tree))
    (image_tree / "Empty Class").mkdir()
    with_empty = sources.fingerprint(str(image_tree))
    assert with_empty["sha256"] != first["sha256"]
    assert with_empty["entries"] == first["entries"] + 1
    (image_tree / "Empty Class").rmdir()
    assert sources.fingerprint(str(image_tree)) == first
    (image_tree / "cat" / ".DS_Store").write_bytes(b"junk")
    assert sources.fingerprint(str(image_tree)) == first


def test_unsafe_labels_and_file_names_in_a_labels_file_are_refused_by_row(tmp_path):
    """`../`, an absolute path or a control character as a label, or a control character in a
    listed file's name: ingest stops naming each row, and writes nothing (BAD_INPUT 19)."""
    folder = tmp_path / "listed"
    write_png(folder / "a.png", 1)
    write_png(folder / "b\x1b.png", 2)
    write_png(tmp_path / "elsewhere" / "c.png", 3)
    (folder / "labels.csv").write_text(
        "path,label\na.png,../evil\na.png,/abs\na.png,bell\x07\nb\x1b.png,ok\n"
        "../elsewhere/c.png,fine\n"
    )
    target = tmp_path / "project" / "data" / "raw"
    target.mkdir(parents=True)
    with pytest.raises(sources.IngestError) as stop:
        sources.write_source(str(folder / "labels.csv"), target)
    message = str(stop.value)
    assert "row 2: name '../evil' could address a path outside the output folder" in message
    assert "row 3: name '/abs' could address a path outside the output folder" in message
    assert "row 4: name 'bell\\x07' contains control characters" in message
    assert "row 5: name 'b\\x1b.png' contains control characters" in message
    assert "row 6" not in message  # a file outside the labels file's folder may be read
    assert list(target.iterdir()) == [] and not (tmp_path / "project" / "data" / "evil").exists()


def test_a_file_listed_from_elsewhere_is_written_inside_data_raw(tmp_path):
    folder = tmp_path / "listed"
    write_png(tmp_path / "elsewhere" / "c.png", 3)
    folder.mkdir()
    (folder / "labels.csv").write_text(
        f"path,label\n../elsewhere/c.png,x\n{tmp_path}/elsewhere/c.png,y\n"
    )
    target = tmp_path / "raw"
    target.mkdir()
    sources.write_source(str(folder / "labels.csv"), target)
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png"))
    assert written == ["elsewhere/c.png", "raw/x/c.png", "raw/y/c.png"]


def test_a_class_folder_or_file_with_a_control_character_is_refused_by_name(image_tree, tmp_path):
    """Through ingest (not copied, listed with why) and the split (rejected, counted), nothing
    written outside data/ (BAD_INPUT 19)."""
    from pipeline.imagedata.assignment import SplitSetup, build_split
    from pipeline.imagedata.images import write_raw_listing
    from pipeline.imagedata.manifest import read_raw_listing
    from pipeline.params import load_params

    write_png(image_tree / "bad\x07class" / "0.png", 5)
    write_png(image_tree / "cat" / "x\x1b.png", 6)
    target = tmp_path / "data" / "raw"
    target.mkdir(parents=True)
    count, skipped = sources.write_source(str(image_tree), target)
    assert count == 30
    problems = dict(zip(skipped["path"], skipped["problem"], strict=True))
    assert problems["bad\x07class"] == "name 'bad\\x07class' contains control characters"
    assert problems["cat/x\x1b.png"] == "name 'x\\x1b.png' contains control characters"
    listing = tmp_path / "data" / "raw_listing.csv"
    write_raw_listing(skipped.assign(given_split=""), listing)
    listed = read_raw_listing(listing)
    cfg = load_params().split.model_copy(update={"max_rejected_fraction": 0.5})
    table = build_split(target, SplitSetup(cfg, 0, 1), {}, skipped=listed[listed["problem"] != ""])
    rejected = table.set_index("raw_path").loc[["bad\x07class", "cat/x\x1b.png"]]
    assert set(rejected["status"]) == {"rejected"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "images"]
