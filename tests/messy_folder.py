"""A class-per-folder image tree with every kind of mess users bring (BAD_INPUT.md 1-9, 19).

`build_messy_folder()` writes the files itself and returns, for each case, the raw path and
what the split must make of it, so a test can assert the exact outcome of each case.
"""

import io
import os
import unicodedata
from pathlib import Path

import numpy as np
from PIL import Image

MUESLI_NFD = unicodedata.normalize("NFD", "Müsli")
MUESLI = unicodedata.normalize("NFC", "Müsli")


def pattern(seed: int, size: tuple[int, int] = (12, 12), mode: str = "RGB") -> Image.Image:
    """A small distinct picture per seed."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    shape = (size[1], size[0], channels) if channels > 1 else (size[1], size[0])
    return Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode=None)


def save(image: Image.Image, path: Path, fmt: str, **options: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt, **options)
    return path


def build_messy_folder(root: Path) -> dict[str, str]:
    """Write the messy tree under `root`; return {case: raw path relative to root}."""
    cases: dict[str, str] = {}
    classes = {"Cat Photos": 100, "dog": 200, MUESLI_NFD: 300}
    for name, offset in classes.items():  # ten plain, valid RGB PNGs per regular class
        for i in range(10):
            save(pattern(offset + i), root / name / f"good_{i}.png", "PNG")

    def case(key: str, relative: str) -> Path:
        cases[key] = relative  # as on disk: the manifest keeps real raw paths
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    # 1. hidden files and folders, OS debris: neither images nor classes
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "dog" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "dog" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    save(pattern(1), root / "dog" / ".ipynb_checkpoints" / "good_0-checkpoint.png", "PNG")
    save(pattern(2), root / "__MACOSX" / "dog" / "._good_0.png", "PNG")
    save(pattern(3), root / ".hidden_class" / "a.png", "PNG")
    (root / "empty class").mkdir()  # 6. an empty class folder: listed, the class reported
    (root / "dog" / "@eaDir" / "good_0.png").mkdir(parents=True)  # a Synology thumbnail folder
    (root / "dog" / "@eaDir" / "good_0.png" / "SYNOFILE_THUMB_S.jpg").write_bytes(b"\xff\xd8")
    (root / "$RECYCLE.BIN").mkdir()
    (root / "$RECYCLE.BIN" / "desktop.ini").write_text("[.ShellClassInfo]")
    (root / "lost+found").mkdir()
    case("loose_file", "README.txt").write_text("photos of pets, sorted by kind")

    # 2. files that are not usable images
    case("text", "dog/notes.png").write_text("not an image at all")
    case("empty", "dog/empty.jpg").touch()
    whole = io.BytesIO()
    pattern(4, (64, 64)).save(whole, format="PNG")
    case("truncated", "dog/truncated.png").write_bytes(
        whole.getvalue()[: len(whole.getvalue()) // 2]
    )
    case("corrupt_jpeg", "dog/corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(300))
    os.mkfifo(case("named_pipe", "dog/pipe.png"))  # reading it would wait forever
    case("broken_link", "dog/gone.png").symlink_to(root / "dog" / "no such file.png")
    save(pattern(23, (100, 100)), case("too_large", "dog/large.png"), "PNG")  # over the limit
    save(pattern(24).convert("L"), case("all_broken_class", "broken/only.png"), "PNG")
    (root / "broken" / "only.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)

    # 3. the extension lies, or the format is one TensorFlow cannot read
    save(pattern(5), case("png_named_jpg", "Cat Photos/really_png.jpg"), "PNG")
    save(pattern(6), case("webp", "Cat Photos/photo.webp"), "WEBP", lossless=True)
    save(pattern(7).convert("P"), case("gif", "Cat Photos/anim.gif"), "GIF")
    save(pattern(8), case("tiff", "Cat Photos/scan.tiff"), "TIFF")
    save(pattern(9), case("bmp", "Cat Photos/bitmap.bmp"), "BMP")
    save(pattern(10), case("jpeg_rgb", "Cat Photos/plain.jpeg"), "JPEG", quality=95)

    # 4. colour modes
    save(pattern(11, mode="L"), case("gray", "dog/gray.png"), "PNG")
    gray_alpha = Image.merge("LA", (pattern(12, mode="L"), Image.new("L", (12, 12), 0)))
    save(gray_alpha, case("gray_alpha_transparent", "dog/gray_alpha.png"), "PNG")
    palette = pattern(13).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    save(palette, case("palette", "dog/palette.png"), "PNG")
    transparent_palette = pattern(14).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    save(
        transparent_palette, case("palette_transparent", "dog/palette_t.png"), "PNG", transparency=0
    )
    rgba = pattern(15, mode="RGBA")
    rgba.putalpha(0)  # fully transparent: must come out as the background colour
    save(rgba, case("rgba_transparent", "dog/rgba.png"), "PNG")
    save(pattern(16).convert("CMYK"), case("cmyk", "dog/cmyk.jpg"), "JPEG", quality=95)
    sixteen = Image.fromarray(np.full((12, 12), 65535, dtype=np.uint16))  # white at 16 bits
    save(sixteen, case("sixteen_bit", "dog/deep.png"), "PNG")
    save(pattern(17, mode="L").convert("1"), case("bilevel", "dog/bilevel.png"), "PNG")
    # colour-key transparency (a tRNS chunk naming one RGB or grey value): that value is the
    # background, the rest opaque
    keyed = Image.new("RGB", (12, 12), (10, 20, 30))
    keyed.paste((200, 0, 0), (0, 0, 6, 12))
    save(keyed, case("rgb_colour_key", "dog/rgb_key.png"), "PNG", transparency=(10, 20, 30))
    grey_keyed = Image.new("L", (12, 12), 7)
    grey_keyed.paste(99, (0, 0, 6, 12))
    save(grey_keyed, case("grey_colour_key", "dog/grey_key.png"), "PNG", transparency=7)

    # several frames: the first is kept, and the manifest says so
    frames = [pattern(30 + i).convert("P") for i in range(3)]
    save(
        frames[0],
        case("animated_gif", "Cat Photos/moving.gif"),
        "GIF",
        save_all=True,
        append_images=frames[1:],
        duration=100,
    )
    frames = [pattern(40 + i) for i in range(3)]
    save(
        frames[0],
        case("apng", "Cat Photos/moving.png"),
        "PNG",
        save_all=True,
        append_images=frames[1:],
        duration=100,
    )
    pages = [pattern(50 + i) for i in range(2)]
    save(
        pages[0],
        case("multipage_tiff", "Cat Photos/pages.tiff"),
        "TIFF",
        save_all=True,
        append_images=pages[1:],
    )

    # 5. EXIF orientation 6: stored 20 wide x 10 high, shown rotated to 10 wide x 20 high
    exif = Image.Exif()
    exif[0x0112] = 6
    save(
        pattern(18, (20, 10)), case("exif_rotated", "dog/rotated.jpg"), "JPEG", exif=exif.tobytes()
    )

    # 6. a class with only two images
    save(pattern(19), case("small_class", "tiny/a.png"), "PNG")
    save(pattern(20), root / "tiny" / "b.png", "PNG")

    # 7. names: spaces, capitals, decomposed non-ASCII (normalised to NFC)
    save(pattern(21), case("nfd_class", f"{MUESLI_NFD}/crunchy ü.png"), "PNG")

    # 8. the same bytes twice in one class, and in two classes
    (root / "dog" / "good_0 copy.png").write_bytes((root / "dog" / "good_0.png").read_bytes())
    cases["duplicate"] = "dog/good_0 copy.png"
    cases["duplicate_original"] = "dog/good_0.png"
    shared = root / "Cat Photos" / "good_9.png"
    (root / "dog" / "which_label.png").write_bytes(shared.read_bytes())
    cases["conflict_a"] = "Cat Photos/good_9.png"
    cases["conflict_b"] = "dog/which_label.png"

    # 19. symbolic links out of the folder
    outside = save(pattern(22), root.parent / "outside" / "secret.png", "PNG")
    link = case("symlink_outside", "dog/link_out.png")
    link.symlink_to(outside)
    (root / "dog" / "linked_folder").symlink_to(outside.parent, target_is_directory=True)
    cases["symlink_folder"] = "dog/linked_folder"
    inside_link = case("symlink_inside", "dog/link_in.png")
    inside_link.symlink_to(root / "dog" / "good_1.png")
    return cases
