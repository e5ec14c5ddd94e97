"""Images on disk: finding them in class folders, checking them, and bringing every one to the
single colour model the model is trained on.

`normalise()` is the one conversion used everywhere an image enters the model, so the split and
later prediction treat a CMYK JPEG or a transparent PNG exactly alike.
"""

import hashlib
import io
import os
import stat
import unicodedata
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.common.files import write_csv
from pipeline.common.log import PipelineError
from pipeline.contracts import DEFAULT_MAX_PIXELS
from pipeline.imagedata.similarity import crop_hashes, perceptual_hash
from pipeline.params import SplitParams
from pipeline.paths import SPLITS

# Folders that tools and file systems create beside real data (macOS archives, Synology
# thumbnails, Windows recycle bins, fsck's lost+found): never classes or images, and each is
# one rejected entry (not read), so a source full of them fails max_rejected_fraction
DEBRIS_FOLDERS = frozenset(
    {"__MACOSX", "@eaDir", "$RECYCLE.BIN", "System Volume Information", "lost+found"}
)
# Small files the OS drops in every folder: listed as ignored (IGNORED), as are hidden files
# and folders; never counted as rejected
JUNK_FILES = frozenset({"Thumbs.db", "desktop.ini", "ehthumbs.db"})
JUNK_NAMES = DEBRIS_FOLDERS | JUNK_FILES
IGNORED = "ignored: "  # how a listed problem starts when the entry is debris, not a bad image
# The formats linked into the split as they are: what the training decoder
# (dataset.decode_contents) reads in every variant Pillow reads; anything else is converted.
TRAINABLE_FORMATS = frozenset({"PNG", "JPEG"})
MODE_FOR_CHANNELS = {1: "L", 3: "RGB"}
EXIF_ORIENTATION = 0x0112
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# Pillow modes without colour: with base.channels auto, a split of only these stays grayscale
GREY_MODES = frozenset({"1", "L", "LA", "La", "F", *SIXTEEN_BIT_MODES})
STORED_RESAMPLING = Image.Resampling.LANCZOS  # a large image scaled down to its stored size


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


def junk_problem(path: Path) -> str:
    """Why a junk entry (`is_junk`) is not data: an OS debris folder is rejected (counted),
    a hidden entry or the OS's small files are ignored (listed only)."""
    if path.name in DEBRIS_FOLDERS and path.is_dir():
        return "OS debris folder (not read)"
    return f"{IGNORED}hidden file or OS debris"


def is_ignored(problem: object) -> bool:
    """Whether a listed problem marks an entry that is listed only (a hidden file, the OS's
    small files, an empty class folder), not a bad image."""
    return isinstance(problem, str) and problem.startswith(IGNORED)


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


SPECIAL_FILES = {
    stat.S_IFIFO: "a named pipe",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def not_regular(path: Path) -> str | None:
    """Why `path` is not a regular file that can be read without blocking, or None. Decided
    from its metadata alone: a named pipe, socket or device is never opened (reading one
    can wait forever)."""
    try:
        mode = path.stat().st_mode  # through a link, at what it points to
    except FileNotFoundError:
        return "symbolic link to nothing (its target is missing)"
    except OSError as error:
        return f"cannot be read ({error.__class__.__name__}: {error})"
    if stat.S_ISREG(mode):
        return None
    kind = SPECIAL_FILES.get(stat.S_IFMT(mode), "not a regular file")
    return f"{kind}, not a regular file (not opened)"


class ImageFolderNotFoundError(PipelineError, FileNotFoundError):
    """The folder of class folders is not there (data/raw before ingest ran, say)."""


class ImageFolderError(PipelineError, ValueError):
    """The folder of class folders cannot be read as classes (two names for one class)."""


def _row(root: Path, path: Path, label: str, problem: str | None) -> dict:
    return {"path": path.relative_to(root).as_posix(), "label": label, "problem": problem}


def _class_rows(root: Path, folder: Path, label: str) -> list[dict]:
    """The entries of one class folder: each file with its problem (None when it may be
    read); linked folders and debris as one row each; an empty folder as one ignored row,
    so that the class is known to exist."""
    rows = []
    for current, dirs, files in os.walk(folder):
        here = Path(current)
        for name in sorted(d for d in dirs if is_junk(d)):
            rows.append(_row(root, here / name, label, junk_problem(here / name)))
        dirs[:] = sorted(d for d in dirs if not is_junk(d))
        for name in [d for d in dirs if (here / d).is_symlink()]:
            dirs.remove(name)
            rows.append(_row(root, here / name, label, "symbolic link to a folder (not followed)"))
        for name in sorted(files):
            file = here / name
            if is_junk(name):
                problem = junk_problem(file)
            elif file.is_symlink() and not _inside(file, root):
                problem = "symbolic link pointing outside the image folder"
            else:
                problem = unsafe_name(name) or not_regular(file)
            rows.append(_row(root, file, label, problem))
    if not rows:
        rows.append(_row(root, folder, label, f"{IGNORED}empty class folder (no files)"))
    return rows


def _check_distinct(folders: dict[str, list[str]], root: Path) -> None:
    clashes = {label: names for label, names in folders.items() if len(names) > 1}
    if clashes:
        listed = "; ".join(" and ".join(repr(n) for n in names) for names in clashes.values())
        raise ImageFolderError(
            f"{root}: class folders whose names are the same text once normalised to Unicode "
            f"NFC (one class, spelt two ways; rename or merge them): {listed}"
        )


def _loose_row(root: Path, entry: Path, beside: str) -> dict:
    """An entry lying beside the class (or split) folders, with why it is not data: debris,
    an unsafe name, a special file, or `beside` for any other loose file."""
    if is_junk(entry.name):
        return _row(root, entry, "", junk_problem(entry))
    return _row(root, entry, "", unsafe_name(entry.name) or not_regular(entry) or beside)


def list_images(root: Path) -> pd.DataFrame:
    """Every entry under `root/<class>/`, sorted, with why it cannot be used (if so).

    Columns: `path` (relative to root, POSIX), `label` (NFC class name; "" for what lies
    beside the class folders), `problem` (None when the file may be read; starting with
    IGNORED for hidden files and the OS's small files, which are listed rather than dropped
    unseen; OS debris folders are rejected).
    Symbolic links are never followed out of `root`, linked folders are reported rather than
    walked, and special files (pipes, sockets, devices) are never opened. Two folders that
    name one class (the same name in NFC and NFD) are an error naming both.
    """
    if not root.is_dir():
        raise ImageFolderNotFoundError(f"image folder not found: {root}")
    rows, folders = [], {}
    for entry in sorted(root.iterdir()):
        if is_junk(entry.name) or not entry.is_dir():
            rows.append(_loose_row(root, entry, "file beside the class folders (no class)"))
            continue
        label = class_name(entry.name)
        folders.setdefault(label, []).append(entry.name)
        problem = unsafe_name(entry.name)
        if entry.is_symlink():
            problem = problem or "class folder is a symbolic link (not followed)"
        if problem:
            rows.append(_row(root, entry, label, problem))
            continue
        rows += _class_rows(root, entry, label)
    _check_distinct(folders, root)
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
    beside = [
        _loose_row(root, entry, "file beside the split folders")
        for entry in sorted(root.iterdir())
        if entry.name not in splits
    ]
    parts = [pd.DataFrame(beside, columns=["path", "label", "problem"]).assign(given_split="")]
    for split in splits:
        part = list_images(root / split)
        parts.append(part.assign(path=split + "/" + part["path"], given_split=split))
    return pd.concat(parts, ignore_index=True)


RAW_COLUMNS = ["path", "label", "problem", "given_split"]  # list_raw's, as ingest writes them


def write_raw_listing(listing: pd.DataFrame, path: Path) -> None:
    """`list_raw` of data/raw as ingest left it, written atomically (read back by
    `manifest.read_raw_listing`)."""
    write_csv(listing.reindex(columns=RAW_COLUMNS), path)


# Pillow's own guard against decompression bombs (twice its MAX_IMAGE_PIXELS): the most
# `split.max_image_pixels` may allow
PILLOW_PIXEL_LIMIT = 2 * Image.MAX_IMAGE_PIXELS


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
    phash_crops: str | None = None  # the hashes of its centred crops, with the phash
    frames: int = 1  # an animated GIF or PNG, a multi-page TIFF: more than one
    transparency: bool = False  # an alpha channel, or a palette or colour-key transparency
    notes: str = ""  # what Pillow warned of while reading it ("; "-separated)

    def as_row(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Rules:
    """The per-file rules the split decides by and the gate verifies with (`file_problem`,
    `stored_size`, `seen_grey`): the split's params."""

    max_pixels: int = DEFAULT_MAX_PIXELS  # split.max_image_pixels: refused before decoding
    min_side: int = 1  # split.min_image_size: a shorter side below it is too small to use
    max_side: int | None = None  # split.max_image_size: stored scaled down to this longer side
    background: tuple[int, int, int] = (255, 255, 255)  # split.background

    @classmethod
    def of(cls, cfg: SplitParams) -> "Rules":
        return cls(
            cfg.max_image_pixels, cfg.min_image_size, cfg.max_image_size, tuple(cfg.background)
        )


def inspect_image(path: Path, perceptual: bool = False, rules: Rules = Rules()) -> ImageFacts:
    """Hash the file and decode it fully; a file that cannot be trained on says why.
    `perceptual`: its perceptual hashes too, of the image as the model sees it (`seen_grey`).
    A special file (a pipe, a device) is refused from its metadata, never opened."""
    special = not_regular(path)
    if special:
        return ImageFacts("", 0, problem=special)
    return inspect_bytes(path.read_bytes(), perceptual, rules)


def _too_large(width: int, height: int, max_pixels: int) -> str | None:
    if width * height <= max_pixels:
        return None
    return (
        f"declared size {width}x{height} ({width * height / 1e6:.3g} megapixels) is more than "
        f"split.max_image_pixels ({max_pixels / 1e6:g} megapixels): not decoded"
    )


def inspect_bytes(data: bytes, perceptual: bool = False, rules: Rules = Rules()) -> ImageFacts:
    """`inspect_image` for an image already in memory (an upload, a request body). The size
    the header declares is checked against `rules.max_pixels` before anything is decoded.
    `perceptual` (the split's and the gate's worker processes): what Pillow warns of is kept
    in `notes`, for the stage to log with the file's name (not in serving's reader thread:
    Python's warning filters are one per process, not thread-safe to swap)."""
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return ImageFacts(digest, 0, problem="empty file")
    if not perceptual:
        return _decoded(data, digest, perceptual, rules)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        facts = _decoded(data, digest, perceptual, rules)
    notes = "; ".join(sorted({str(w.message) for w in caught}))
    return ImageFacts(**{**facts.as_row(), "notes": notes}) if notes else facts


def _decoded(data: bytes, digest: str, perceptual: bool, rules: Rules) -> ImageFacts:
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            fmt, mode, (width, height) = image.format, image.mode, image.size
            too_large = _too_large(width, height, rules.max_pixels)
            if too_large:
                return ImageFacts(digest, len(data), fmt, mode, width, height, problem=too_large)
            orientation = int(image.getexif().get(EXIF_ORIENTATION, 1) or 1)
            frames = int(getattr(image, "n_frames", 1) or 1)
            transparent = mode in ALPHA_MODES or "transparency" in image.info
            image.load()  # a truncated or corrupt file fails here, not at training time
            hashed = perceptual and width and height
            grey = seen_grey(image, rules) if hashed else None
            phash = perceptual_hash(grey) if hashed else None
            crops = crop_hashes(grey) if hashed else None
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
    facts = ImageFacts(
        digest, len(data), fmt, mode, width, height, orientation, phash=phash,
        phash_crops=crops, frames=frames, transparency=transparent,
    )  # fmt: skip
    if width < 1 or height < 1:
        return ImageFacts(**{**facts.as_row(), "problem": f"empty picture ({width}x{height})"})
    return facts


def size_problem(width: int, height: int, min_side: int) -> str | None:
    """Why an image is too small to show anything (a side below `split.min_image_size`)."""
    if min(width, height) >= min_side:
        return None
    return f"too small: {width}x{height} pixels, a side below split.min_image_size ({min_side})"


def file_problem(facts: ImageFacts, rules: Rules) -> str | None:
    """Why a file cannot be trained on, or None: the one rule for every file, which the
    split decides by and the gate verifies with (not an image, corrupt, truncated, more
    pixels than allowed, an empty picture, too small)."""
    if facts.problem:
        return facts.problem
    return size_problem(facts.width, facts.height, rules.min_side)


def stored_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """The size the split stores an image at: its own, or scaled down so that its longer side
    is `max_side` (a large image is kept, at a size training can afford)."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def seen_grey(image: Image.Image, rules: Rules) -> Image.Image:
    """The image as the model sees it, in grey: normalised (`normalise`: first frame, EXIF
    orientation, transparency on the background) at the size the split stores it at. The
    split hashes and compares raw files through it, the gate the files the split wrote
    (where it changes nothing), so both judge the same pixels."""
    grey, _ = normalise(image, 1, rules.background)
    size = stored_size(*grey.size, rules.max_side)
    return grey if size == grey.size else grey.resize(size, STORED_RESAMPLING)


def resolve_channels(channels: int | str, modes: pd.Series) -> int:
    """`base.channels` for images of these Pillow `modes`: a number stays; auto is 1 when
    every image is grayscale (no RGB copy of grey pixels), else 3."""
    if channels != "auto":
        return int(channels)
    return 1 if modes.isin(GREY_MODES).all() else 3


def needs_conversion(facts: ImageFacts, channels: int, max_side: int | None = None) -> bool:
    """Whether the file must be re-encoded before training, or may be linked as it is: only
    a single-frame PNG or JPEG already in the model's colour model, upright, with no
    transparency and no side beyond `max_side`, is linked."""
    return (
        stored_size(facts.width, facts.height, max_side) != (facts.width, facts.height)
        or facts.format not in TRAINABLE_FORMATS
        or facts.mode != MODE_FOR_CHANNELS[channels]
        or facts.orientation != 1
        or facts.frames > 1
        or facts.transparency
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

    Of an animated or multi-page image, the first frame is kept (and said so); EXIF
    orientation is applied; transparency in every form (an alpha channel, a palette's
    transparent entries, an RGB or grey colour key) is composited onto `background` (never
    dropped to black); CMYK, palette and 16-bit images are converted.
    """
    actions = []
    frames = int(getattr(image, "n_frames", 1) or 1)
    if frames > 1:
        image.seek(0)
        actions.append(f"first of {frames} frames kept")
    orientation = int(image.getexif().get(EXIF_ORIENTATION, 1) or 1)
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
        actions.append(f"EXIF orientation {orientation} applied")
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "F":
        actions.append(f"{image.mode} scaled to 8 bits")
        image = _to_8_bit(image)
    if "transparency" in image.info and image.mode not in ALPHA_MODES:
        image = image.convert("RGBA")  # a palette's transparent entries, or a colour key
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


def to_png(
    data: bytes, channels: int, background: tuple[int, int, int], max_side: int | None = None
) -> tuple[bytes, list[str]]:
    """The image normalised (`normalise`), scaled down to `stored_size` and re-encoded as
    PNG, and what was done."""
    out = io.BytesIO()
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        fmt = image.format
        converted, actions = normalise(image, channels, background)
        size = stored_size(*converted.size, max_side)
        if size != converted.size:
            actions.append(f"{converted.width}x{converted.height} scaled to {size[0]}x{size[1]}")
            converted = converted.resize(size, STORED_RESAMPLING)
        converted.save(out, format="PNG")  # one frame: save_all is off
    if fmt != "PNG":
        actions.insert(0, f"{fmt} re-encoded as PNG")
    return out.getvalue(), actions


def model_ready(
    data: bytes,
    channels: int,
    background: tuple[int, int, int],
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[bytes, list[str]]:
    """The bytes the model's decoder reads for this image, exactly as the split stage writes
    them: the file itself when it is already a format and colour model the decoder reads as
    trained, else the normalised image as PNG. Raises UnreadableImageError with the reason
    (an image declaring more than `max_pixels` is refused before it is decoded)."""
    facts = inspect_bytes(data, rules=Rules(max_pixels=max_pixels))
    if facts.problem:
        raise UnreadableImageError(facts.problem)
    if not needs_conversion(facts, channels):
        return data, []
    return to_png(data, channels, background)
