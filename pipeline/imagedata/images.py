"""Images on disk: finding them in class folders, checking them, and bringing every one to the
single colour model the model is trained on.

`normalise()` is the one conversion used everywhere an image enters the model, so the split and
later prediction treat a CMYK JPEG or a transparent PNG exactly alike.
"""

import hashlib
import io
import os
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.common.files import write_csv
from pipeline.common.log import PipelineError
from pipeline.imagedata.similarity import perceptual_hash
from pipeline.paths import SPLITS

# Folders and files that tools create beside real data: never classes, never images.
JUNK_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini", "ehthumbs.db"})
# What TensorFlow's decoder reads, as Pillow names the format it finds in the file's bytes.
TRAINABLE_FORMATS = frozenset({"PNG", "JPEG", "BMP", "GIF"})
MODE_FOR_CHANNELS = {1: "L", 3: "RGB"}
EXIF_ORIENTATION = 0x0112
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# Pillow modes without colour: with base.channels auto, a split of only these stays grayscale
GREY_MODES = frozenset({"1", "L", "LA", "La", "F", *SIXTEEN_BIT_MODES})


def is_junk(name: str) -> bool:
    """Hidden files and folders (`.DS_Store`, `.ipynb_checkpoints`) and OS debris."""
    return name.startswith(".") or name in JUNK_NAMES


def class_name(folder_name: str) -> str:
    """A class is named by its folder, normalised to NFC so that macOS and Linux agree."""
    return unicodedata.normalize("NFC", folder_name)


def unsafe_name(name: str) -> str | None:
    """Why a file or folder name could not be written safely on every platform, or None."""
    if name in {".", ".."} or "/" in name or "\\" in name:
        return f"name {name!r} could address a path outside the output folder"
    if any(unicodedata.category(char) == "Cc" for char in name):
        return f"name {name!r} contains control characters"
    return None


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


class ImageFolderNotFoundError(PipelineError, FileNotFoundError):
    """The folder of class folders is not there (data/raw before ingest ran, say)."""


def list_images(root: Path) -> pd.DataFrame:
    """Every candidate file under `root/<class>/`, sorted, with why it cannot be used (if so).

    Columns: `path` (relative to root, POSIX), `label` (NFC class name), `problem` (None when
    the file may be read). Hidden and junk entries are skipped; symbolic links are never
    followed out of `root`, and linked folders are reported rather than walked.
    """
    if not root.is_dir():
        raise ImageFolderNotFoundError(f"image folder not found: {root}")
    rows = []
    for folder in sorted(root.iterdir()):
        if is_junk(folder.name) or not folder.is_dir():
            continue
        label = class_name(folder.name)
        problem = unsafe_name(folder.name)
        if folder.is_symlink():
            problem = problem or "class folder is a symbolic link (not followed)"
        if problem:
            rows.append({"path": folder.name, "label": label, "problem": problem})
            continue
        for current, dirs, files in os.walk(folder):
            here = Path(current)
            dirs[:] = sorted(d for d in dirs if not is_junk(d))
            for name in [d for d in dirs if (here / d).is_symlink()]:
                dirs.remove(name)
                relative = (here / name).relative_to(root).as_posix()
                rows.append(
                    {
                        "path": relative,
                        "label": label,
                        "problem": "symbolic link to a folder (not followed)",
                    }
                )
            for name in sorted(f for f in files if not is_junk(f)):
                file = here / name
                problem = unsafe_name(name)
                if file.is_symlink() and not _inside(file, root):
                    problem = "symbolic link pointing outside the image folder"
                rows.append(
                    {"path": file.relative_to(root).as_posix(), "label": label, "problem": problem}
                )
    listing = pd.DataFrame(rows, columns=["path", "label", "problem"])
    return listing.sort_values(["label", "path"], ignore_index=True)


# a folder of given splits holds these two (and maybe `validation/`), each a folder of classes
GIVEN_SPLITS_REQUIRED = ("train", "test")


def given_splits(folder: Path) -> list[str]:
    """The split folders of `folder` when it holds given splits (`train/` and `test/`, maybe
    `validation/`, and no other folder but junk), in SPLITS order; else []."""
    names = {p.name for p in folder.iterdir() if p.is_dir() and not is_junk(p.name)}
    if not names <= set(SPLITS) or not set(GIVEN_SPLITS_REQUIRED) <= names:
        return []
    return [name for name in SPLITS if name in names]


def list_raw(root: Path) -> pd.DataFrame:
    """`list_images` of a folder of classes, or of each given split (paths then start with
    the split's folder), with the column `given_split` ("" when the splits are not given)."""
    if not root.is_dir():
        raise ImageFolderNotFoundError(f"image folder not found: {root}")
    splits = given_splits(root)
    if not splits:
        return list_images(root).assign(given_split="")
    parts = []
    for split in splits:
        part = list_images(root / split)
        parts.append(part.assign(path=split + "/" + part["path"], given_split=split))
    return pd.concat(parts, ignore_index=True)


RAW_COLUMNS = ["path", "label", "problem", "given_split"]  # list_raw's, as ingest writes them


def write_raw_listing(listing: pd.DataFrame, path: Path) -> None:
    """`list_raw` of data/raw as ingest left it, written atomically (read back by
    `manifest.read_raw_listing`)."""
    write_csv(listing.reindex(columns=RAW_COLUMNS), path)


@dataclass(frozen=True)
class ImageFacts:
    """What one file turned out to be, read from its bytes."""

    sha256: str
    bytes: int
    format: str | None = None
    mode: str | None = None
    width: int | None = None
    height: int | None = None
    orientation: int = 1
    problem: str | None = None
    phash: str | None = None  # the perceptual hash (imagedata.similarity), when asked for

    def as_row(self) -> dict:
        return asdict(self)


def inspect_image(path: Path, perceptual: bool = False) -> ImageFacts:
    """Hash the file and decode it fully; a file that cannot be trained on says why.
    `perceptual`: its perceptual hash too."""
    return inspect_bytes(path.read_bytes(), perceptual)


def inspect_bytes(data: bytes, perceptual: bool = False) -> ImageFacts:
    """`inspect_image` for an image already in memory (an upload, a request body)."""
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return ImageFacts(digest, 0, problem="empty file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, mode, (width, height) = image.format, image.mode, image.size
            orientation = int(image.getexif().get(EXIF_ORIENTATION, 1) or 1)
            image.load()  # a truncated or corrupt file fails here, not at training time
            phash = perceptual_hash(image) if perceptual and width and height else None
    except UnidentifiedImageError:
        return ImageFacts(digest, len(data), problem="not an image (no known image format)")
    except Image.DecompressionBombError as error:
        return ImageFacts(digest, len(data), problem=f"too many pixels ({error})")
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        return ImageFacts(
            digest,
            len(data),
            problem=f"corrupt or truncated image ({error.__class__.__name__}: {error})",
        )
    facts = ImageFacts(digest, len(data), fmt, mode, width, height, orientation, phash=phash)
    if width < 1 or height < 1:
        return ImageFacts(**{**facts.as_row(), "problem": f"empty picture ({width}x{height})"})
    return facts


def resolve_channels(channels: int | str, modes: pd.Series) -> int:
    """`base.channels` for images of these Pillow `modes`: a number stays; auto is 1 when
    every image is grayscale (no RGB copy of grey pixels), else 3."""
    if channels != "auto":
        return int(channels)
    return 1 if modes.isin(GREY_MODES).all() else 3


def needs_conversion(facts: ImageFacts, channels: int) -> bool:
    """Whether the file must be re-encoded before training, or may be linked as it is."""
    return (
        facts.format not in TRAINABLE_FORMATS
        or facts.mode != MODE_FOR_CHANNELS[channels]
        or facts.orientation != 1
    )


def _to_8_bit(image: Image.Image) -> Image.Image:
    """16- and 32-bit integer or float grayscale to 8 bits, scaling rather than clipping."""
    pixels = np.asarray(image, dtype=np.float64)
    peak = pixels.max(initial=0)
    if image.mode.startswith("I;16") or (image.mode == "I" and peak > 255):
        top = 65535.0
    elif image.mode == "F" and peak <= 1.0:
        top = 1.0
    else:
        top = 255.0
    return Image.fromarray(np.clip(np.rint(pixels * (255.0 / top)), 0, 255).astype(np.uint8))


def normalise(
    image: Image.Image, channels: int, background: tuple[int, int, int]
) -> tuple[Image.Image, list[str]]:
    """The image in the model's colour model (`L` or `RGB`), and what was done to get there.

    EXIF orientation is applied; transparency is composited onto `background` (never
    dropped to black); CMYK, palette and 16-bit images are converted.
    """
    actions = []
    orientation = int(image.getexif().get(EXIF_ORIENTATION, 1) or 1)
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
        actions.append(f"EXIF orientation {orientation} applied")
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "F":
        actions.append(f"{image.mode} scaled to 8 bits")
        image = _to_8_bit(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ALPHA_MODES:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        image = Image.alpha_composite(canvas, rgba).convert("RGB")
        actions.append(f"transparency composited on RGB{tuple(background)}")
    target = MODE_FOR_CHANNELS[channels]
    if image.mode != target:
        actions.append(f"{image.mode} -> {target}")
        image = image.convert(target)
    return image, actions


class UnreadableImageError(ValueError):
    """The bytes are not an image the model can be given; the message says why."""


def to_png(data: bytes, channels: int, background: tuple[int, int, int]) -> tuple[bytes, list[str]]:
    """The image normalised (`normalise`) and re-encoded as PNG, and what was done."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        fmt = image.format
        converted, actions = normalise(image, channels, background)
    out = io.BytesIO()
    converted.save(out, format="PNG")
    if fmt != "PNG":
        actions.insert(0, f"{fmt} re-encoded as PNG")
    return out.getvalue(), actions


def model_ready(
    data: bytes, channels: int, background: tuple[int, int, int]
) -> tuple[bytes, list[str]]:
    """The bytes the model's decoder reads for this image, exactly as the split stage writes
    them: the file itself when it is already a format and colour model the decoder reads as
    trained, else the normalised image as PNG. Raises UnreadableImageError with the reason."""
    facts = inspect_bytes(data)
    if facts.problem:
        raise UnreadableImageError(facts.problem)
    if not needs_conversion(facts, channels):
        return data, []
    return to_png(data, channels, background)
