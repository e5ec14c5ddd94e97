import unicodedata
import warnings

import numpy as np
import pytest
from PIL import Image

from pipeline.imagedata.images import (
    ImageFolderError,
    inspect_image,
    is_ignored,
    list_images,
    needs_conversion,
    normalise,
    unsafe_name,
)
from tests.conftest import write_png

WHITE = (255, 255, 255)


def test_list_images_lists_hidden_files_as_ignored_and_debris_folders_as_rejected(image_tree):
    (image_tree / ".DS_Store").write_bytes(b"\0")
    (image_tree / "cat" / ".DS_Store").write_bytes(b"\0")
    (image_tree / "cat" / "Thumbs.db").write_bytes(b"\0")
    write_png(image_tree / "cat" / ".ipynb_checkpoints" / "0-checkpoint.png", 1)
    write_png(image_tree / "cat" / "@eaDir" / "0.png" / "SYNOFILE_THUMB.jpg", 1)
    write_png(image_tree / "__MACOSX" / "cat" / "0.png", 1)
    write_png(image_tree / ".hidden_class" / "0.png", 1)
    (image_tree / "lost+found").mkdir()
    listing = list_images(image_tree)
    ignored = listing[listing["problem"].map(is_ignored)]
    assert sorted(ignored["path"]) == [
        ".DS_Store",
        ".hidden_class",
        "cat/.DS_Store",
        "cat/.ipynb_checkpoints",
        "cat/Thumbs.db",
    ]
    debris = listing[listing["problem"] == "OS debris folder (not read)"]
    assert sorted(debris["path"]) == ["__MACOSX", "cat/@eaDir", "lost+found"]
    assert sorted(set(listing["label"]) - {""}) == ["cat", "dog", "owl"]
    images = listing.drop(ignored.index).drop(debris.index)
    assert len(images) == 30 and images["problem"].isna().all()


def test_loose_files_and_special_files_are_listed_with_a_reason_never_opened(image_tree):
    import os

    (image_tree / "notes.txt").write_text("beside the classes")
    os.mkfifo(image_tree / "cat" / "pipe.png")
    os.mkfifo(image_tree / "fifo_beside")
    problems = list_images(image_tree).set_index("path")["problem"]  # returns: nothing blocks
    assert problems["notes.txt"] == "file beside the class folders (no class)"
    assert problems["cat/pipe.png"] == "a named pipe, not a regular file (not opened)"
    assert problems["fifo_beside"] == "a named pipe, not a regular file (not opened)"
    assert inspect_image(image_tree / "cat" / "pipe.png").problem == problems["cat/pipe.png"]


def test_two_folders_naming_one_class_in_nfc_are_an_error_naming_both(tmp_path):
    nfd, nfc = unicodedata.normalize("NFD", "Müsli"), unicodedata.normalize("NFC", "Müsli")
    write_png(tmp_path / nfd / "0.png", 1)
    write_png(tmp_path / nfc / "0.png", 2)
    with pytest.raises(ImageFolderError, match="NFC") as error:
        list_images(tmp_path)
    assert repr(nfd) in str(error.value) and repr(nfc) in str(error.value)


def test_list_images_normalises_class_names_to_nfc(tmp_path):
    write_png(tmp_path / unicodedata.normalize("NFD", "Müsli") / "0.png", 1)
    assert list_images(tmp_path)["label"].tolist() == [unicodedata.normalize("NFC", "Müsli")]


def test_an_empty_class_folder_is_listed_so_its_class_is_not_lost(image_tree):
    (image_tree / "empty").mkdir()
    [row] = list_images(image_tree).query("label == 'empty'").itertuples()
    assert (row.path, row.problem) == ("empty", "ignored: empty class folder (no files)")


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


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk declaring `width` x `height`, then garbage: a file
    that would take gigabytes to decode, or fail, if anything tried."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"\0" * 64)


def test_a_decompression_bomb_is_refused_from_its_header_before_any_decoding(monkeypatch):
    from pipeline.imagedata import images

    def no_decoding(self):
        raise AssertionError("decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    with warnings.catch_warnings():  # Pillow warns above 89 megapixels; the limit decides
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        facts = images.inspect_bytes(
            _png_header_only(12_000, 10_000), rules=images.Rules(max_pixels=100_000_000)
        )
    assert facts.problem == (
        "declared size 12000x10000 (120 megapixels) is more than split.max_image_pixels "
        "(100 megapixels): not decoded"
    )
    assert (facts.width, facts.height, facts.format) == (12_000, 10_000, "PNG")
    with pytest.raises(images.UnreadableImageError, match="declared size 20x20"):
        images.model_ready(_png_header_only(20, 20), 3, images.Rules(max_pixels=100))


def test_the_pixel_limit_param_cannot_exceed_pillows_own_guard():
    from pipeline.imagedata.images import PILLOW_PIXEL_LIMIT
    from pipeline.params import PILLOW_PIXEL_LIMIT as PARAMS_LIMIT

    assert PARAMS_LIMIT == PILLOW_PIXEL_LIMIT


# ---- working size: what a camera photo costs ----------------------------------------------


def _camera_photo(width: int = 2400, height: int = 1800, orientation: int = 6) -> bytes:
    """A real photograph (scikit-learn's china.jpg) enlarged to a camera's size, saved as a
    camera saves it: JPEG, with an EXIF orientation tag (6: shown turned 90 degrees)."""
    import io

    from sklearn.datasets import load_sample_image

    photo = Image.fromarray(load_sample_image("china.jpg")).resize((width, height))
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    photo.save(out, format="JPEG", quality=92, exif=exif)
    return out.getvalue()


def test_a_camera_photo_is_decoded_at_a_reduced_scale_and_stored_upright_at_its_working_size(
    monkeypatch,
):
    import io

    from PIL import JpegImagePlugin

    from pipeline.imagedata import images

    asked = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        asked.append(size)
        return original(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    data = _camera_photo()
    rules = images.Rules(max_side=512, jpeg_quality=90)
    stored, actions = images.model_ready(data, 3, rules)
    assert asked == [(512, 384)]  # libjpeg decodes at 1/4 scale (600x450), not 2400x1800
    assert actions == [
        "JPEG re-encoded at quality 90",
        "EXIF orientation 6 applied",
        "2400x1800 scaled to 384x512",
    ]
    with Image.open(io.BytesIO(stored)) as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (384, 512))
        assert not image.getexif().get(0x0112)  # upright: no tag left to apply twice
        seen = np.asarray(image, np.float64)
    with Image.open(io.BytesIO(data)) as full:  # the slow way: every pixel decoded
        slow = images.ImageOps.exif_transpose(full).resize((384, 512), images.STORED_RESAMPLING)
    # the same picture: JPEG quality 90 and the scaled decoding differ by 3.4 grey levels on
    # average (a one-pixel shift of it: about 9)
    assert np.abs(seen - np.asarray(slow, np.float64)).mean() < 4
    assert len(stored) < len(data) / 10


def test_a_truncated_camera_photo_is_still_rejected_when_decoded_at_a_reduced_scale():
    from pipeline.imagedata import images

    data = _camera_photo()
    facts = images.inspect_bytes(data[: len(data) * 2 // 3], rules=images.Rules(max_side=512))
    assert facts.problem.startswith("corrupt or truncated image (OSError: image file is truncated")


def test_a_large_drawing_is_stored_losslessly_as_png_and_a_small_photo_as_it_is():
    import io

    from pipeline.imagedata import images

    drawing = Image.new("RGBA", (1600, 800), (0, 0, 0, 0))
    drawing.paste((200, 30, 30, 255), (400, 200, 1200, 600))
    out = io.BytesIO()
    drawing.save(out, format="PNG")
    rules = images.Rules(max_side=512)
    stored, actions = images.model_ready(out.getvalue(), 3, rules)
    assert actions == [
        "transparency composited on RGB(255, 255, 255)",
        "1600x800 scaled to 512x256",
    ]
    with Image.open(io.BytesIO(stored)) as image:
        assert (image.format, image.size) == ("PNG", (512, 256))
    small = _camera_photo(480, 360, orientation=1)
    assert images.model_ready(small, 3, rules) == (small, [])  # linked, never re-encoded


def test_the_split_hashes_the_pixels_it_stores_so_the_gate_finds_the_same(tmp_path):
    from pipeline.imagedata import images

    raw = tmp_path / "photo.jpg"
    raw.write_bytes(_camera_photo())
    rules = images.Rules(max_side=512)
    facts = images.inspect_image(raw, perceptual=True, rules=rules, staging=tmp_path)
    copy = tmp_path / facts.staged
    assert copy.suffix == ".jpg" and facts.staged_actions.startswith("JPEG re-encoded")
    again = images.inspect_image(copy, perceptual=True, rules=rules)  # as the gate reads it
    assert (again.phash, again.phash_crops) == (facts.phash, facts.phash_crops)
    assert (facts.width, facts.height) == (2400, 1800)  # the original's size, for the manifest
