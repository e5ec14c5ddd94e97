"""The split manifest: one row per file found in `data/raw`, the contract between the split
stage and every stage after it; and ingest's listing of `data/raw`, which the gate accounts
every file against."""

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from pipeline.common.files import read_json, write_csv
from pipeline.contracts import ContractError
from pipeline.paths import RAW_LISTING, SPLIT_DIR, SPLIT_MANIFEST, SPLITS

STATE_FILE = "split.json"  # how the split was made: seed, fractions, channels, counts

# Row status. Only files with a split (OK, TRAIN_ONLY) reach training.
OK = "ok"
TRAIN_ONLY = "train_only"  # a class too small for every split, kept in train by policy
REJECTED = "rejected"  # not a usable image (reason says why)
CONFLICT = "conflict"  # the same bytes under two classes
DROPPED = "dropped"  # a class too small for every split, dropped by policy
IGNORED = "ignored"  # a hidden file or OS debris: listed, never counted as rejected
EXCLUDED = "excluded"  # left out by a fix in data/relabels.csv (`drop`)
STATUSES = (OK, TRAIN_ONLY, REJECTED, CONFLICT, DROPPED, IGNORED, EXCLUDED)
# the reason of a placed image whose near-duplicate group the split spread over the splits
# (split.inseparable_groups: split): its near duplicates across splits are reported, not leaks
SPREAD = "near-duplicate group spread over the splits (split.inseparable_groups: split)"

COLUMNS = [
    "path",  # inside data/split ("" when the file has no split)
    "label",
    "relabelled_from",  # the class data/raw has it under, when data/relabels.csv moved it
    "split",  # train | validation | test | ""
    "status",
    "reason",
    "raw_path",  # inside data/raw
    "sha256",
    "group",  # the near-duplicate group (its smallest sha256) kept in one split; "" for none
    "format",
    "mode",
    "width",
    "height",
    "bytes",
    "action",  # linked | converted: what was done
]


def read_manifest(path: Path = SPLIT_MANIFEST) -> pd.DataFrame:
    """The manifest with every column as text, empty cells as "" (never NaN)."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise ContractError(f"{path} is missing: run `dvc repro split`") from None


def read_raw_listing(path: Path = RAW_LISTING) -> pd.DataFrame:
    """The listing ingest wrote (`images.write_raw_listing`), every column as text, "" for no
    problem or no given split."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise ContractError(f"{path} is missing: run `dvc repro ingest`") from None


def in_splits(manifest: pd.DataFrame) -> pd.DataFrame:
    """Rows that were assigned to a split, i.e. the images training and evaluation see."""
    return manifest[manifest["split"] != ""]


def class_shares(
    placed: pd.DataFrame, fractions: Mapping[str, float], tolerance: float, min_per_split: int
) -> pd.DataFrame:
    """The promise every class's split keeps, which the split decides by and the gate verifies
    with: from `placed` (a row per image, columns label and split), one row per (class, split)
    with its `count` (0 for a split the class lacks), its `fraction` of the class, the
    `expected` share, the `deviation` and the `allowed` one (`tolerance` plus one image of
    rounding), `within` it, and `met`: within it, with at least `min_per_split` images where
    the share is above 0.
    """
    labels = sorted(set(placed["label"]))
    full = pd.MultiIndex.from_product([labels, SPLITS], names=["label", "split"])
    counts = placed.groupby(["label", "split"]).size().reindex(full, fill_value=0)
    table = counts.rename("count").reset_index()
    sizes = table.groupby("label")["count"].transform("sum")
    table["fraction"] = table["count"] / sizes.clip(lower=1)
    table["expected"] = table["split"].map(fractions)
    table["deviation"] = (table["fraction"] - table["expected"]).abs()
    table["allowed"] = tolerance + 1 / sizes.clip(lower=1)
    enough = (table["count"] >= min_per_split) | (table["expected"] == 0)
    table["within"] = table["deviation"] <= table["allowed"]
    table["met"] = enough & table["within"]
    return table


def raw_labels(manifest: pd.DataFrame) -> pd.Series:
    """Each row's class as data/raw has it (before data/relabels.csv)."""
    moved = manifest["relabelled_from"].ne("")
    return manifest["relabelled_from"].where(moved, manifest["label"])


def write_manifest(table: pd.DataFrame, path: Path = SPLIT_MANIFEST) -> None:
    """The manifest's columns, in their order, written atomically."""
    write_csv(table.reindex(columns=COLUMNS), path)


def split_channels(split_dir: Path = SPLIT_DIR) -> int:
    """The colour model the split stored every image in: 1 (grayscale) or 3 (RGB)."""
    path = split_dir / STATE_FILE
    try:
        channels = read_json(path).get("channels")
    except FileNotFoundError:
        channels = None
    if channels not in (1, 3):
        raise ContractError(f"{path} does not say the split's channels: run `dvc repro split`")
    return channels
