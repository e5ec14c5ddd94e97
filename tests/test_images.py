import unicodedata

from PIL import Image

from pipeline.images import image_problem, list_images
from tests.conftest import write_png


def test_list_images_skips_hidden_and_junk(image_tree):
    (image_tree / ".DS_Store").write_bytes(b"\0")
    (image_tree / "cat" / ".DS_Store").write_bytes(b"\0")
    (image_tree / "cat" / "Thumbs.db").write_bytes(b"\0")
    write_png(image_tree / "cat" / ".ipynb_checkpoints" / "0-checkpoint.png", 1)
    write_png(image_tree / "__MACOSX" / "cat" / "0.png", 1)
    write_png(image_tree / ".hidden_class" / "0.png", 1)
    listing = list_images(image_tree)
    assert sorted(listing["label"].unique()) == ["cat", "dog", "owl"]
    assert len(listing) == 30
    assert not listing["path"].str.contains(r"/\.|__MACOSX|Thumbs").any()


def test_list_images_normalises_class_names_to_nfc(tmp_path):
    decomposed = unicodedata.normalize("NFD", "Müsli")
    write_png(tmp_path / decomposed / "0.png", 1)
    assert list_images(tmp_path)["label"].tolist() == ["Müsli"]


def test_empty_class_folder_is_not_a_class(image_tree):
    (image_tree / "empty").mkdir()
    assert "empty" not in set(list_images(image_tree)["label"])


def test_image_problem_reasons(tmp_path):
    empty = tmp_path / "empty.png"
    empty.touch()
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    truncated = tmp_path / "truncated.png"
    good = write_png(tmp_path / "good.png", 3, size=64)
    truncated.write_bytes(good.read_bytes()[:200])
    tiff = tmp_path / "scan.png"
    Image.new("L", (8, 8)).save(tiff, format="TIFF")
    disguised = tmp_path / "photo.jpg"
    disguised.write_bytes(good.read_bytes())

    assert image_problem(empty) == "empty file"
    assert image_problem(text).startswith("not a readable image (UnidentifiedImageError")
    assert image_problem(truncated).startswith("not a readable image (OSError")
    assert image_problem(tiff) == "TIFF images are not supported (use one of BMP, GIF, JPEG, PNG)"
    assert image_problem(disguised) is None  # a PNG named .jpg is judged by its bytes
    assert image_problem(good) is None
