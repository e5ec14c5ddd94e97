"""Finding images in class-per-folder trees."""

import unicodedata
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

# Folders that tools create beside real data: never classes, never images.
JUNK_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})
# What TensorFlow's decoder reads, as Pillow names the format it finds in the file's bytes.
TRAINABLE_FORMATS = frozenset({"PNG", "JPEG", "BMP", "GIF"})


def is_junk(path: Path) -> bool:
    """Hidden files and folders (`.DS_Store`, `.ipynb_checkpoints`) and OS debris."""
    return path.name.startswith(".") or path.name in JUNK_NAMES


def class_name(folder: Path) -> str:
    """A class is named by its folder, normalised to NFC so that macOS and Linux agree."""
    return unicodedata.normalize("NFC", folder.name)


def list_images(root: Path) -> pd.DataFrame:
    """One row per image under `root/<class>/`: columns `path` (relative to root) and `label`.

    Rows are sorted by label then path, so the listing is the same on every machine.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not is_junk(p)):
        for file in sorted(folder.rglob("*")):
            relative = file.relative_to(folder)
            if file.is_file() and not any(is_junk(Path(part)) for part in relative.parts):
                rows.append(
                    {"path": file.relative_to(root).as_posix(), "label": class_name(folder)}
                )
    listing = pd.DataFrame(rows, columns=["path", "label"])
    return listing.sort_values(["label", "path"], ignore_index=True)


def image_problem(path: Path) -> str | None:
    """Why `path` cannot go to training, or None when it is a readable image.

    The format is read from the file's content, never from its extension.
    """
    if path.stat().st_size == 0:
        return "empty file"
    try:
        with Image.open(path) as image:
            fmt = image.format
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        return f"not a readable image ({error.__class__.__name__}: {error})"
    if fmt not in TRAINABLE_FORMATS:
        return f"{fmt} images are not supported (use one of {', '.join(sorted(TRAINABLE_FORMATS))})"
    return None
