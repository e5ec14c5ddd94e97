"""Stage `ingest`: materialise the dataset as `data/raw/<class>/<image>`.

The default source is scikit-learn's bundled handwritten digits (real 8x8 scans, no download);
`ingest.source` may instead name a folder with one subfolder of images per class.
"""

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from pipeline.common.files import staged_dir
from pipeline.common.log import PipelineError, run_stage
from pipeline.imagedata.images import list_images
from pipeline.params import load_params
from pipeline.paths import RAW_DIR, ROOT

log = logging.getLogger(__name__)

DIGITS_SOURCE = "digits"


class IngestError(PipelineError, ValueError):
    """`ingest.classes` or `ingest.source` names what the source does not have."""


class SourceNotFoundError(PipelineError, FileNotFoundError):
    """`ingest.source` names a folder that does not exist."""


DIGITS_MAX_VALUE = 16  # the scans store ink as 0..16


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """The bundled digits as uint8 grayscale images (N, 8, 8) and their integer labels."""
    digits = load_digits()
    pixels = np.rint(digits.images * (255 / DIGITS_MAX_VALUE)).astype(np.uint8)
    return pixels, digits.target


def write_digits(target: Path, classes: Sequence[str] = ()) -> int:
    """Write the digit scans of `classes` (all when empty) as `target/<digit>/<index>.png`;
    return how many."""
    pixels, labels = digits_images()
    check_classes(classes, sorted({str(label) for label in labels}), DIGITS_SOURCE)
    count = 0
    for index, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        if classes and str(label) not in classes:
            continue
        count += 1
        folder = target / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{index:04d}.png")
    return count


def check_classes(wanted: Sequence[str], available: list[str], source: str) -> None:
    """Every class named in `ingest.classes` must exist in the source."""
    missing = [name for name in wanted if name not in available]
    if missing:
        raise IngestError(
            f"ingest.classes names {missing}, which {source} does not have "
            f"(its classes: {', '.join(available)})"
        )


def resolve_source(source: str) -> Path:
    """A user folder given relative to the project root or absolute."""
    path = Path(source).expanduser()
    path = path if path.is_absolute() else ROOT / path
    if not path.is_dir():
        raise SourceNotFoundError(
            f"ingest.source = {source!r}: folder {path} does not exist "
            f"(use {DIGITS_SOURCE!r} or a folder with one subfolder of images per class)"
        )
    return path


def copy_folder(source: Path, target: Path, classes: Sequence[str] = ()) -> int:
    """Copy every file of the class folders of `source` named in `classes` (all when empty;
    hidden files and OS debris left out); count them.

    Links out of the folder and unsafe names are not copied: each is logged as a warning.
    """
    listing = list_images(source)
    if listing.empty:
        raise IngestError(f"ingest.source: {source} holds no class folder with files in it")
    if classes:
        check_classes(classes, sorted(listing["label"].unique()), str(source))
        listing = listing[listing["label"].isin(classes)]
    skipped = listing[listing["problem"].notna()]
    for row in skipped.itertuples():
        log.warning(f"not copied: {row.path}: {row.problem}")
    copied = listing.loc[listing["problem"].isna(), "path"]
    for relative in copied:
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / relative, destination)
    return len(copied)


def main() -> None:
    params = load_params().ingest
    with staged_dir(RAW_DIR) as staging:
        if params.source == DIGITS_SOURCE:
            count = write_digits(staging, params.classes)
        else:
            count = copy_folder(resolve_source(params.source), staging, params.classes)
    classes = sorted(p.name for p in RAW_DIR.iterdir() if p.is_dir())
    chosen = " (ingest.classes)" if params.classes else ""
    log.info(f"{count} images in {len(classes)} classes{chosen} -> {RAW_DIR.relative_to(ROOT)}")


if __name__ == "__main__":
    run_stage("ingest", main)
