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
    staged: str = ""  # the file name of its working-size copy in the split's working folder
    staged_actions: str = ""  # what making that copy did ("; "-separated)

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
    jpeg_quality: int = 90  # split.jpeg_quality: a JPEG source re-encoded at its working size

    @classmethod
    def of(cls, cfg: SplitParams) -> "Rules":
        return cls(
            cfg.max_image_pixels,
            cfg.min_image_size,
            cfg.max_image_size,
            tuple(cfg.background),
            cfg.jpeg_quality,
        )


@dataclass(frozen=True)
class Stored:
    """An image brought to its working size and colour model (`stage`), as encoded bytes."""

    data: bytes
    suffix: str  # .jpg for a JPEG source, .png for every other
    actions: list[str]


def inspect_image(
    path: Path, perceptual: bool = False, rules: Rules = Rules(), staging: Path | None = None
) -> ImageFacts:
    """Hash the file and decode it (a JPEG larger than its working size at a reduced scale,
    `stage`); a file that cannot be trained on says why. `perceptual`: its perceptual hashes
    too, of the image as the model sees it (`seen_grey` of what the split stores). `staging`:
    a folder where the working-size copy is written (named in `staged`), when there is one.
    A special file (a pipe, a device) is refused from its metadata, never opened."""
    special = not_regular(path)
    if special:
        return ImageFacts("", 0, problem=special)
    facts, stored = _inspected(path.read_bytes(), perceptual, rules)
    if stored is None or staging is None:
        return facts
    name = facts.sha256 + stored.suffix
    (staging / name).write_bytes(stored.data)
    return ImageFacts(
        **{**facts.as_row(), "staged": name, "staged_actions": "; ".join(stored.actions)}
    )


def _too_large(width: int, height: int, max_pixels: int) -> str | None:
    if width * height <= max_pixels:
        return None
    return (
        f"declared size {width}x{height} ({width * height / 1e6:.3g} megapixels) is more than "
        f"split.max_image_pixels ({max_pixels / 1e6:g} megapixels): not decoded"
    )


def inspect_bytes(data: bytes, perceptual: bool = False, rules: Rules = Rules()) -> ImageFacts:
    """`inspect_image` for an image already in memory (an upload, a request body)."""
    return _inspected(data, perceptual, rules)[0]


def _inspected(data: bytes, perceptual: bool, rules: Rules) -> tuple[ImageFacts, Stored | None]:
    """The file's facts, and its working-size copy when it needs one (`stage`). The size the
    header declares is checked against `rules.max_pixels` before anything is decoded.
    `perceptual` (the split's and the gate's worker processes): what Pillow warns of is kept
    in `notes`, for the stage to log with the file's name (not in serving's reader thread:
    Python's warning filters are one per process, not thread-safe to swap)."""
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return ImageFacts(digest, 0, problem="empty file"), None
    if not perceptual:
        return _decoded(data, digest, perceptual, rules)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        facts, stored = _decoded(data, digest, perceptual, rules)
    notes = "; ".join(sorted({str(w.message) for w in caught}))
    return (ImageFacts(**{**facts.as_row(), "notes": notes}) if notes else facts), stored


def _header_facts(image: Image.Image, digest: str, size: int) -> ImageFacts:
    """What the header says (nothing decoded)."""
    return ImageFacts(
        digest,
        size,
        image.format,
        image.mode,
        *image.size,
        orientation=int(image.getexif().get(EXIF_ORIENTATION, 1) or 1),
        frames=int(getattr(image, "n_frames", 1) or 1),
        transparency=image.mode in ALPHA_MODES or "transparency" in image.info,
    )


def _decoded(
    data: bytes, digest: str, perceptual: bool, rules: Rules
) -> tuple[ImageFacts, Stored | None]:
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            width, height = image.size
            too_large = _too_large(width, height, rules.max_pixels)
            if too_large:  # before anything else is read (a PNG's EXIF may load the image)
                facts = ImageFacts(digest, len(data), image.format, image.mode, width, height)
                return ImageFacts(**{**facts.as_row(), "problem": too_large}), None
            facts = _header_facts(image, digest, len(data))
            if width < 1 or height < 1:
                return ImageFacts(
                    **{**facts.as_row(), "problem": f"empty picture ({width}x{height})"}
                ), None
            # a truncated or corrupt file fails here, not at training time
            stored = stage(image, facts, rules)
            if not perceptual:
                return facts, stored
            grey = _grey(stored, image, rules)
            hashes = {"phash": perceptual_hash(grey), "phash_crops": crop_hashes(grey)}
    except UnidentifiedImageError:
        return ImageFacts(digest, len(data), problem="not an image (no known image format)"), None
    except Image.DecompressionBombError as error:
        return ImageFacts(digest, len(data), problem=f"too many pixels ({error})"), None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        problem = f"corrupt or truncated image ({error.__class__.__name__}: {error})"
        return ImageFacts(digest, len(data), problem=problem), None
    return ImageFacts(**{**facts.as_row(), **hashes}), stored


def natural_channels(facts: ImageFacts) -> int:
    """The colour model an image is stored in before the split knows the model's: grey for
    a grey image, RGB for every other (a transparent one is composited on the background's
    colour)."""
    return 1 if facts.mode in GREY_MODES and not facts.transparency else 3


def stage(image: Image.Image, facts: ImageFacts, rules: Rules) -> Stored | None:
    """Decode the opened image and, when it cannot be stored as it is (`needs_conversion` in
    its own colour model: too large, rotated, transparent, animated, CMYK, another format),
    bring it to its working size: a JPEG larger than that is decoded at a reduced scale
    (Pillow's `draft`: libjpeg's DCT scaling, 1/2 to 1/8, so a 12-megapixel photo costs a
    fraction of a full decode), then normalised (`normalise`) and resized to `stored_size`
    with STORED_RESAMPLING; a JPEG source is re-encoded as JPEG at `rules.jpeg_quality`,
    any other as PNG (lossless). None: the file itself is stored (it is decoded all the same,
    so a truncated file is found). The split and prediction both store images through here."""
    channels = natural_channels(facts)
    if not needs_conversion(facts, channels, rules.max_side):
        image.load()
        return None
    target = stored_size(facts.width, facts.height, rules.max_side)
    if image.format == "JPEG" and target != (facts.width, facts.height):
        image.draft(image.mode, target)  # at least `target`: never below the working size
    image.load()
    converted, actions = normalise(image, channels, rules.background)
    size = stored_size(*converted.size, rules.max_side)
    if size != converted.size:
        converted = converted.resize(size, STORED_RESAMPLING)
        actions.append(f"{facts.width}x{facts.height} scaled to {size[0]}x{size[1]}")
    out = io.BytesIO()
    if image.format == "JPEG":
        converted.save(out, format="JPEG", quality=rules.jpeg_quality)
        return Stored(
            out.getvalue(), ".jpg", [f"JPEG re-encoded at quality {rules.jpeg_quality}", *actions]
        )
    converted.save(out, format="PNG")  # one frame: save_all is off
    if image.format != "PNG":
        actions.insert(0, f"{image.format} re-encoded as PNG")
    return Stored(out.getvalue(), ".png", actions)


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
    """The image as the model sees it, in grey: what the split stores of it (`stage`: first
    frame, EXIF orientation, transparency on the background, at its working size, re-encoded)
    converted to grey. The split hashes and compares raw files through it, the gate the files
    the split wrote (where `stage` changes nothing), so both judge the same pixels."""
    stored = stage(image, _header_facts(image, "", 0), rules)
    return _grey(stored, image, rules)


def _grey(stored: "Stored | None", image: Image.Image, rules: Rules) -> Image.Image:
    """The grey pixels of what is stored: the working-size copy decoded, or the image."""
    if stored is not None:
        image = Image.open(io.BytesIO(stored.data))
    grey, _ = normalise(image, 1, rules.background)
    return grey


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


def finish(data: bytes, channels: int, rules: Rules) -> tuple[bytes, list[str]]:
    """A stored image (`stage`'s, or a file stored as it is) in the model's colour model:
    unchanged when it is in it, else converted (`to_png`; a grey image in an RGB split, or
    colour in a grey one, at its working size already: lossless, so its grey pixels are the
    ones the split compared)."""
    with Image.open(io.BytesIO(data)) as image:
        facts = _header_facts(image, "", len(data))
    if not needs_conversion(facts, channels, rules.max_side):
        return data, []
    return to_png(data, channels, rules.background, rules.max_side)


def stored_suffix(facts: ImageFacts, channels: int, rules: Rules) -> str | None:
    """The suffix of the file the split writes for an image (`stage`, then `finish`): None
    when the file itself is stored; .jpg when a JPEG source is staged in the model's colour
    model; .png for every other conversion."""
    natural = natural_channels(facts)
    staged = needs_conversion(facts, natural, rules.max_side)
    if not staged and not needs_conversion(facts, channels, rules.max_side):
        return None
    return ".jpg" if staged and facts.format == "JPEG" and natural == channels else ".png"


def stored_file(
    path: Path, channels: int, rules: Rules, staged: Path | None = None
) -> tuple[bytes, list[str]]:
    """What the split writes for the file at `path` (`stage`, then `finish`), from its
    working-size copy `staged` when the inspection made one."""
    if staged is not None:
        return finish(staged.read_bytes(), channels, rules)
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        stored = stage(image, _header_facts(image, "", len(data)), rules)
    return _finished(data, stored, channels, rules)


def _finished(
    data: bytes, stored: Stored | None, channels: int, rules: Rules
) -> tuple[bytes, list[str]]:
    """`finish` of the working-size copy (or of the file, stored as it is), with what both
    steps did."""
    ready, actions = finish(stored.data if stored else data, channels, rules)
    return ready, (stored.actions if stored else []) + actions


def model_ready(data: bytes, channels: int, rules: Rules) -> tuple[bytes, list[str]]:
    """The bytes the model's decoder reads for this image, exactly as the split stage writes
    them (`stage`, then `finish`): the file itself when it is already a format, size and
    colour model the decoder reads as trained, else its working-size copy. Raises
    UnreadableImageError with the reason (an image declaring more than `rules.max_pixels` is
    refused before it is decoded)."""
    facts, stored = _inspected(data, False, rules)
    if facts.problem:
        raise UnreadableImageError(facts.problem)
    return _finished(data, stored, channels, rules)
