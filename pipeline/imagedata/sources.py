"""The datasets `ingest.source` can name, and how each is written to `data/raw`.

- `digits`: scikit-learn's bundled handwritten digits (1,797 real 8x8 scans, no download).
- `fashion-mnist`: Zalando's 70,000 28x28 product photos with their official split (60,000
  train, 10,000 test), read from the IDX files of Debian's `dataset-fashion-mnist` package
  (or the folder `FASHION_MNIST_DIR` names).
- a folder with one subfolder of images per class; or a folder of given splits, `train/` and
  `test/` (and optionally `validation/`), each holding class folders (the layout of Keras'
  examples, Kaggle and Hugging Face's `imagefolder`), kept as given.

`data/raw` holds `<class>/<file>`, or `<split>/<class>/<file>` when the splits are given.
"""

import gzip
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.common.files import file_digest
from pipeline.common.log import PipelineError
from pipeline.common.names import BUILTIN_SOURCES, DIGITS, FASHION_MNIST
from pipeline.common.parallel import parallel_map
from pipeline.imagedata.images import (
    GIVEN_SPLITS_REQUIRED,
    is_ignored,
    is_junk,
    list_raw,
    unsafe_name,
)
from pipeline.paths import ROOT, SPLITS

log = logging.getLogger(__name__)

DIGITS_MAX_VALUE = 16  # the scans store ink as 0..16
# Debian's dataset-fashion-mnist installs the four IDX files here
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt-top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_FILES = {"train": "train", "test": "t10k"}  # split -> IDX file prefix
CHUNK = 200  # images a worker writes at a time
MESSAGE_LINES = 50  # rows listed in an error before it says "and N more"


class IngestError(PipelineError, ValueError):
    """`ingest.classes` or `ingest.source` names what the source does not have."""


class SourceNotFoundError(PipelineError, FileNotFoundError):
    """`ingest.source` names a folder or files that do not exist."""


def check_classes(wanted: Sequence[str], available: Sequence[str], source: str) -> None:
    """Every class named in `ingest.classes` must exist in the source."""
    missing = [name for name in wanted if name not in available]
    if missing:
        raise IngestError(
            f"ingest.classes names {missing}, which {source} does not have "
            f"(its classes: {', '.join(available)})"
        )


def _write_pngs(target: Path, pixels: np.ndarray, names: list[str]) -> None:
    """`pixels[i]` (uint8, H x W) as the PNG `target / names[i]`."""
    for folder in {Path(name).parent for name in names}:
        (target / folder).mkdir(parents=True, exist_ok=True)
    for image, name in zip(pixels, names, strict=True):
        Image.fromarray(image).save(target / name, format="PNG")


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """The bundled digits as uint8 grayscale images (N, 8, 8) and their integer labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.rint(digits.images * (255 / DIGITS_MAX_VALUE)).astype(np.uint8), digits.target


def write_digits(target: Path, classes: Sequence[str] = ()) -> int:
    """The digit scans of `classes` (all when empty) as `target/<digit>/<index>.png`; how many."""
    pixels, targets = digits_images()
    labels = [str(label) for label in targets]
    check_classes(classes, sorted(set(labels)), DIGITS)
    chosen = [i for i, label in enumerate(labels) if not classes or label in classes]
    _write_pngs(target, pixels[chosen], [f"{labels[i]}/{i:04d}.png" for i in chosen])
    return len(chosen)


def fashion_mnist_folder() -> Path:
    return Path(os.environ.get("FASHION_MNIST_DIR", FASHION_MNIST_DIR))


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip or plain) as its uint8 array: images (N, H, W) or labels (N,)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        data = file.read()
    zero, dtype, dims = data[0:2], data[2], data[3]
    if zero != b"\0\0" or dtype != 0x08:
        raise IngestError(f"{path} is not an IDX file of unsigned bytes")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if values.size != int(np.prod(shape)):
        raise IngestError(f"{path} holds {values.size} values, its header says {shape}")
    return values.reshape(shape)


def _idx_file(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise SourceNotFoundError(
        f"ingest.source = {FASHION_MNIST!r}: {folder / (stem + '.gz')} is missing. Install "
        f"Debian's package (`apt-get install dataset-fashion-mnist`), or set FASHION_MNIST_DIR "
        f"to a folder holding the four IDX files (train- and t10k-, images and labels)"
    )


def _write_chunk(target: Path, job: tuple[np.ndarray, list[str]]) -> int:
    pixels, names = job
    _write_pngs(target, pixels, names)
    return len(names)


def write_fashion_mnist(target: Path, classes: Sequence[str] = ()) -> int:
    """Fashion-MNIST with its official split as `target/<split>/<class>/<index>.png`."""
    check_classes(classes, FASHION_MNIST_CLASSES, FASHION_MNIST)
    folder, jobs = fashion_mnist_folder(), []
    for split, prefix in FASHION_MNIST_FILES.items():
        pixels = read_idx(_idx_file(folder, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_idx_file(folder, f"{prefix}-labels-idx1-ubyte"))
        if len(pixels) != len(labels) or labels.max() >= len(FASHION_MNIST_CLASSES):
            raise IngestError(f"{folder}: the {split} images and labels do not match")
        names = [FASHION_MNIST_CLASSES[label] for label in labels]
        chosen = [i for i, name in enumerate(names) if not classes or name in classes]
        for start in range(0, len(chosen), CHUNK):
            part = chosen[start : start + CHUNK]
            jobs.append((pixels[part], [f"{split}/{names[i]}/{i:05d}.png" for i in part]))
    return sum(parallel_map(partial(_write_chunk, target), jobs, "ingest: writing"))


def resolve_source(source: str) -> Path:
    """A user folder, or labels file (`.csv`), given relative to the project root or absolute."""
    path = Path(source).expanduser()
    path = path if path.is_absolute() else ROOT / path
    if not path.is_dir() and not (path.suffix.lower() == ".csv" and path.is_file()):
        builtin = " or ".join(repr(name) for name in BUILTIN_SOURCES)
        raise SourceNotFoundError(
            f"ingest.source = {source!r}: {path} does not exist (use "
            f"{builtin}, a folder with one subfolder of images "
            f"per class or with train/ and test/ folders of class folders, or a CSV file of "
            f"path,label[,split])"
        )
    return path


LISTED_COLUMNS = ("path", "label")  # and, optionally, split


def read_labels_file(path: Path, classes: Sequence[str] = ()) -> pd.DataFrame:
    """A labels file: rows of `path,label[,split]`, each path relative to the file's folder
    or absolute. A missing column, an empty label, an unknown split or a listed file that is
    not there stops ingest, naming the rows (numbered as in the file, the header being 1)."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise IngestError(f"ingest.source: {path} is not a readable CSV file ({error})") from None
    missing = [c for c in LISTED_COLUMNS if c not in table.columns]
    if missing:
        raise IngestError(
            f"ingest.source: {path} has no column {', '.join(missing)} (its columns: "
            f"{', '.join(table.columns)}; expected path,label[,split])"
        )
    table["row"] = table.index + 2
    problems = [f"row {r.row}: {why}" for r, why in _listed_problems(table, path.parent)]
    if problems:
        if len(problems) > MESSAGE_LINES:
            problems[MESSAGE_LINES:] = [f"... and {len(problems) - MESSAGE_LINES} more"]
        listed = "\n  ".join(problems)
        raise IngestError(f"ingest.source: {path} lists rows that cannot be used:\n  {listed}")
    if classes:
        check_classes(classes, sorted(table["label"].unique()), str(path))
        table = table[table["label"].isin(classes)]
    return table


def _listed_problems(table: pd.DataFrame, folder: Path) -> Iterator[tuple]:
    splits = set(table["split"]) if "split" in table else set()
    if splits and not (splits <= set(SPLITS) and set(GIVEN_SPLITS_REQUIRED) <= splits):
        bad = table[~table["split"].isin(SPLITS)]
        for row in (bad if len(bad) else table.head(1)).itertuples():
            yield (
                row,
                (
                    f"split {row.split!r}: the split column names train and test (and "
                    f"maybe validation) only, and both of train and test"
                ),
            )
    for row in table.itertuples():
        problem = unsafe_name(row.label) if row.label else "empty label"
        # the copy keeps the file's name only (copy_listed): that name must be safe too
        problem = problem or unsafe_name(Path(row.path).name)
        if problem:
            yield row, problem
        elif not (folder / row.path).is_file():
            yield row, f"{folder / row.path} is not a file"


def copy_listed(path: Path, target: Path, classes: Sequence[str] = ()) -> int:
    """The files a labels file lists, copied to `target/[<split>/]<label>/<file name>`."""
    table = read_labels_file(path, classes)
    taken: set[str] = set()
    for row in table.itertuples():
        folder = Path(row.split, row.label) if "split" in table else Path(row.label)
        name = Path(row.path).name
        if (folder / name).as_posix().lower() in taken:  # two files of one name in a class
            name = f"{Path(name).stem}-row{row.row}{Path(name).suffix}"
        taken.add((folder / name).as_posix().lower())
        (target / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path.parent / row.path, target / folder / name)
    return len(table)


def copy_folder(
    source: Path, target: Path, classes: Sequence[str] = ()
) -> tuple[int, pd.DataFrame]:
    """Copy every file of the class folders of `source` (or of each of its given splits, kept
    as `<split>/<class>/`) whose class is in `classes` (all when empty); the count, and the
    entries not copied with why (`list_raw` rows: links out of the folder, unsafe names,
    special files, files beside the class folders, hidden files and OS debris), which ingest
    lists so that the split reports them. A class named must be in the source, in some split.
    """
    listing = list_raw(source)
    if not listing["label"].ne("").any():
        raise IngestError(f"ingest.source: {source} holds no class folder with files in it")
    if classes:
        check_classes(classes, sorted(set(listing["label"]) - {""}), str(source))
        listing = listing[listing["label"].isin(classes) | listing["label"].eq("")]
    skipped = listing[listing["problem"].notna()]
    for row in skipped[~skipped["problem"].map(is_ignored)].itertuples():
        log.warning(f"not copied: {source / row.path}: {row.problem}")
    copied = listing.loc[listing["problem"].isna(), "path"]
    for relative in copied:
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / relative, destination)
    return len(copied), skipped.reset_index(drop=True)


NOTHING_SKIPPED = pd.DataFrame(columns=["path", "label", "problem", "given_split"])


def write_source(
    source: str, target: Path, classes: Sequence[str] = ()
) -> tuple[int, pd.DataFrame]:
    """`ingest.source` written to the empty folder `target`: how many files, and the entries
    of a source folder that were not copied (`copy_folder`)."""
    if source == DIGITS:
        return write_digits(target, classes), NOTHING_SKIPPED
    if source == FASHION_MNIST:
        return write_fashion_mnist(target, classes), NOTHING_SKIPPED
    path = resolve_source(source)
    if path.is_dir():
        return copy_folder(path, target, classes)
    return copy_listed(path, target, classes), NOTHING_SKIPPED


def _folder_listing(folder: Path) -> Iterator[str]:
    """Every file under `folder` (junk skipped, links not followed) as `path size mtime_ns`."""
    for current, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not is_junk(d))
        for name in sorted(f for f in files if not is_junk(f)):
            path = Path(current, name)
            yield _stat_line(path, path.relative_to(folder).as_posix())


def _source_listing(folder: Path) -> Iterator[str]:
    """Ingest's own listing of a source folder (`list_raw`: every file, and every entry it
    does not copy with why, an empty class folder among them), a line per entry, with the
    size and modification time of what is there: ingest sees a change exactly when this
    does. Hidden files and the OS's small files are left out (ingest ignores them, and a
    `.DS_Store` written by a file browser is no reason to split again)."""
    for row in list_raw(folder).itertuples():
        path = folder / row.path
        if is_junk(path.name) and is_ignored(row.problem):
            continue
        stat = _stat_line(path, row.path) if path.is_file() else f"{row.path}\t-\t-"
        problem = row.problem if isinstance(row.problem, str) else ""  # None or NaN: none
        yield f"{stat}\t{row.label}\t{row.given_split}\t{problem}"


def _stat_line(path: Path, name: str) -> str:
    stat = path.lstat()
    return f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}"


def fingerprint(source: str) -> dict:
    """What `ingest.source` names, summed up so that adding, removing, renaming or changing
    any file of it changes the digest (by size and modification time, as DVC itself tells a
    changed file): a folder's listing as ingest makes it (`_source_listing`: an empty class
    folder added or removed counts), Fashion-MNIST's IDX files, or the scikit-learn release
    that bundles the digits."""
    if source == DIGITS:
        from sklearn import __version__

        return {"source": source, "scikit-learn": __version__}
    folder = fashion_mnist_folder() if source == FASHION_MNIST else resolve_source(source)
    if source == FASHION_MNIST:
        lines = _folder_listing(folder)
    elif folder.is_dir():
        lines = _source_listing(folder)
    else:  # a labels file: its own bytes, and the files it lists
        table = read_labels_file(folder)
        lines = [file_digest(folder)] + [_stat_line(folder.parent / p, p) for p in table["path"]]
    digest, count = hashlib.sha256(), 0
    for line in lines:
        digest.update(line.encode() + b"\n")
        count += 1
    return {"source": source, "path": str(folder), "entries": count, "sha256": digest.hexdigest()}
