import unicodedata

import numpy as np
import pytest
from PIL import Image

from pipeline.imagedata.images import (
    inspect_image,
    list_images,
    needs_conversion,
    normalise,
    unsafe_name,
)
from tests.conftest import write_png

WHITE = (255, 255, 255)


def test_list_images_skips_hidden_and_junk(image_tree):
    (image_tree / ".DS_Store").write_bytes(b"\0")
    (image_tree / "cat" / ".DS_Store").write_bytes(b"\0")
    (image_tree / "cat" / "Thumbs.db").write_bytes(b"\0")
    write_png(image_tree / "cat" / ".ipynb_checkpoints" / "0-checkpoint.png", 1)
    write_png(image_tree / "__MACOSX" / "cat" / "0.png", 1)
    write_png(image_tree / ".hidden_class" / "0.png", 1)
    listing = list_images(image_tree)
    assert sorted(listing["label"].unique()) == ["cat", "dog", "owl"]
    assert len(listing) == 30 and listing["problem"].isna().all()


def test_list_images_normalises_class_names_to_nfc(tmp_path):
    write_png(tmp_path / unicodedata.normalize("NFD", "Müsli") / "0.png", 1)
    assert list_images(tmp_path)["label"].tolist() == [unicodedata.normalize("NFC", "Müsli")]


def test_empty_class_folder_is_not_a_class(image_tree):
    (image_tree / "empty").mkdir()
    assert "empty" not in set(list_images(image_tree)["label"])


def test_symlinks_out_of_the_folder_are_reported_not_followed(image_tree, tmp_path):
    outside = write_png(tmp_path / "elsewhere" / "secret.png", 7)
    (image_tree / "cat" / "out.png").symlink_to(outside)
    (image_tree / "cat" / "in.png").symlink_to(image_tree / "dog" / "0.png")
    (image_tree / "linked_class").symlink_to(outside.parent, target_is_directory=True)
    problems = list_images(image_tree).set_index("path")["problem"]
    assert problems["cat/out.png"] == "symbolic link pointing outside the image folder"
    assert pd_isna(problems["cat/in.png"])
    assert problems["linked_class"] == "class folder is a symbolic link (not followed)"


def pd_isna(value: object) -> bool:
    return value is None or value != value


@pytest.mark.parametrize("name", ["..", "a\\..\\b", "bad\x07name"])
def test_unsafe_names_are_named(name):
    assert repr(name) in unsafe_name(name)


def test_inspect_reads_the_format_from_the_bytes(tmp_path):
    disguised = write_png(tmp_path / "photo.jpg", 3)
    facts = inspect_image(disguised)
    assert (facts.format, facts.mode, facts.width, facts.height) == ("PNG", "L", 8, 8)
    assert facts.problem is None
    assert not needs_conversion(facts, channels=1)
    assert needs_conversion(facts, channels=3)


def test_inspect_names_the_problem(tmp_path):
    (tmp_path / "empty.png").touch()
    (tmp_path / "text.png").write_text("hello")
    assert inspect_image(tmp_path / "empty.png").problem == "empty file"
    assert inspect_image(tmp_path / "text.png").problem == "not an image (no known image format)"


def test_normalise_composites_transparency_on_the_background():
    image = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    out, actions = normalise(image, channels=3, background=(0, 128, 255))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (0, 128, 255)
    assert actions == ["transparency composited on RGB(0, 128, 255)"]


def test_normalise_half_transparent_pixels_blend():
    image = Image.new("RGBA", (1, 1), (0, 0, 0, 128))
    out, _ = normalise(image, channels=1, background=WHITE)
    assert out.mode == "L" and 120 <= out.getpixel((0, 0)) <= 135


def test_normalise_scales_sixteen_bit():
    image = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))
    out, actions = normalise(image, channels=1, background=WHITE)
    assert np.asarray(out).tolist() == [[0, 128, 255]]
    assert actions[0] == f"{image.mode} scaled to 8 bits"
