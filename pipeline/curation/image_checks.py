"""Image-quality checks on the split's images with cleanvision (`Imagelab`): dark, light,
blurry, low-information, odd size or aspect ratio, and exact and near duplicates within the
whole split (the data gate looks only across splits; a duplicate set that spans two classes
is a label conflict). Each check is a column of one per-image table and a count per class.
"""

import contextlib
import io
import logging
from pathlib import Path

import pandas as pd
from cleanvision import Imagelab

log = logging.getLogger(__name__)

DUPLICATES = ("exact_duplicates", "near_duplicates")


def run_imagelab(paths: list[str], checks: list[str], workers: int) -> Imagelab:
    """cleanvision's checks (`checks`, its issue names) on the files `paths`."""
    lab = Imagelab(filepaths=paths, verbose=False)
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bars, even when not verbose
        lab.find_issues(issue_types={check: {} for check in checks}, n_jobs=workers, verbose=False)
    return lab


def issue_table(rows: pd.DataFrame, lab: Imagelab, checks: list[str], root: Path) -> pd.DataFrame:
    """One row per image with at least one issue: where it is, its class, which checks flag
    it (`issues`, joined by ';') and cleanvision's score for each check (low is bad)."""
    issues = lab.issues.reindex([str(root / path) for path in rows["path"]])
    flags = pd.DataFrame(
        {check: issues[f"is_{check}_issue"].fillna(False).astype(bool).to_numpy()
         for check in checks}, index=rows.index,
    )  # fmt: skip
    table = rows[["raw_path", "path", "split", "label"]].copy()
    table["issues"] = flags.apply(lambda row: ";".join(row.index[row]), axis=1)
    for check in checks:
        table[f"{check}_score"] = issues[f"{check}_score"].round(4).to_numpy()
    return table[flags.any(axis=1)].reset_index(drop=True)


def counts_per_class(rows: pd.DataFrame, flagged: pd.DataFrame, checks: list[str]) -> pd.DataFrame:
    """Images per class and how many of them each check flags, with a total row. A check
    that flags most of the data measures the data's kind, not a fault (cleanvision's
    thresholds suit photographs: low_information flags 86% of the 8x8 digits): warned."""
    counts = pd.DataFrame({"images": rows.groupby("label").size()})
    for check in checks:
        named = flagged["issues"].map(lambda text, c=check: c in text.split(";")).astype(bool)
        hit = flagged.loc[named, "label"].value_counts()
        counts[check] = hit.reindex(counts.index, fill_value=0)
        if counts[check].sum() > len(rows) / 2:
            log.warning(
                f"image check {check} flags {counts[check].sum()} of {len(rows)} images: its "
                "threshold does not suit this data (leave it out of audit.image_checks)"
            )
    counts = counts.fillna(0).astype(int)
    counts.loc["(all)"] = counts.sum()
    return counts.rename_axis("class").reset_index()


def duplicate_sets(
    rows: pd.DataFrame, lab: Imagelab, checks: list[str], root: Path
) -> pd.DataFrame:
    """Every set of exact or near duplicates cleanvision found: its size, classes (more than
    one: a label conflict), splits and files."""
    where = {str(root / path): i for i, path in zip(rows.index, rows["path"], strict=True)}
    found = []
    for kind in (check for check in DUPLICATES if check in checks):
        for number, members in enumerate(lab.info.get(kind, {}).get("sets", []), start=1):
            part = rows.loc[[where[member] for member in members]]
            labels = sorted(set(part["label"]))
            found.append(
                {
                    "set": f"{kind}-{number}",
                    "kind": kind,
                    "size": len(part),
                    "classes": ";".join(labels),
                    "conflicting_labels": len(labels) > 1,
                    "splits": ";".join(sorted(set(part["split"]))),
                    "raw_paths": ";".join(part["raw_path"]),
                }
            )
    columns = ["set", "kind", "size", "classes", "conflicting_labels", "splits", "raw_paths"]
    return pd.DataFrame(found, columns=columns)
