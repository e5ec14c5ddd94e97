"""Image-quality checks on the split's images: cleanvision's (`Imagelab`: dark, light, blurry,
low-information, odd size or aspect ratio, grayscale) on the files, and the split's own
duplicate decisions (`imagedata.assignment`: the same bytes, and its near-duplicate groups)
read from the manifest, so the audit reports the duplicates the split and the gate act on
instead of judging them again with a rule of its own. Each check is a column of one
per-image table and a count per class.
"""

import contextlib
import io
import logging
from pathlib import Path

import pandas as pd
from cleanvision import Imagelab

log = logging.getLogger(__name__)

# decided by the split, read from the manifest: identical bytes (sha256), near duplicates (group)
DUPLICATES = ("exact_duplicates", "near_duplicates")


def run_imagelab(paths: list[str], checks: list[str], workers: int) -> Imagelab:
    """cleanvision's `checks` (its issue names) on the files `paths`."""
    lab = Imagelab(filepaths=paths, verbose=False)
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bars, even when not verbose
        lab.find_issues(issue_types={check: {} for check in checks}, n_jobs=workers, verbose=False)
    return lab


def cleanvision_checks(rows: pd.DataFrame, checks: list[str], root: Path, workers: int) -> tuple:
    """Flags (one boolean column per check) and cleanvision's scores (`<check>_score`, low is
    bad) of the cleanvision checks in `checks` on the placed images `rows` under `root`."""
    own = [check for check in checks if check not in DUPLICATES]
    if not own:
        return pd.DataFrame(index=rows.index), pd.DataFrame(index=rows.index)
    paths = [str(root / path) for path in rows["path"]]
    issues = run_imagelab(paths, own, workers).issues.reindex(paths)
    flags = pd.DataFrame(
        {check: issues[f"is_{check}_issue"].fillna(False).astype(bool).to_numpy() for check in own},
        index=rows.index,
    )
    scores = pd.DataFrame(
        {f"{check}_score": issues[f"{check}_score"].round(4).to_numpy() for check in own},
        index=rows.index,
    )
    return flags, scores


def duplicate_flags(rows: pd.DataFrame, checks: list[str]) -> pd.DataFrame:
    """The duplicate checks in `checks`, as the split decided them: exact_duplicates, an image
    whose bytes another placed image shares; near_duplicates, one in a near-duplicate group."""
    found = {
        "exact_duplicates": rows["sha256"].duplicated(keep=False),
        "near_duplicates": rows["group"] != "",
    }
    return pd.DataFrame({check: found[check] for check in checks if check in DUPLICATES})


def issue_table(rows: pd.DataFrame, flags: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """One row per image with at least one issue: where it is, its class, which checks flag
    it (`issues`, joined by ';') and cleanvision's score for each of its checks."""
    table = rows[["raw_path", "path", "split", "label"]].copy()
    table["issues"] = (
        flags.apply(lambda row: ";".join(row.index[row]), axis=1) if len(flags.columns) else ""
    )
    table = pd.concat([table, scores], axis=1)
    flagged = flags.any(axis=1) if len(flags.columns) else pd.Series(False, index=rows.index)
    return table[flagged].reset_index(drop=True)


def counts_per_class(rows: pd.DataFrame, flagged: pd.DataFrame, checks: list[str]) -> pd.DataFrame:
    """Images per class and how many of them each check flags, with a total row. A check
    that flags most of the data measures the data's kind, not a fault (cleanvision's
    thresholds suit photographs; docs/benchmarks.md has an example): warned."""
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


def duplicate_sets(rows: pd.DataFrame, checks: list[str]) -> pd.DataFrame:
    """Every set of placed images the split found to be one picture: the same bytes
    (exact_duplicates) or one near-duplicate group (near_duplicates); its size, classes (more
    than one: a label conflict the split kept, as it keeps a given test split's image whose
    conflicts lie outside it), splits and files."""
    keys = {"exact_duplicates": "sha256", "near_duplicates": "group"}
    found = []
    for kind in (check for check in DUPLICATES if check in checks):
        key = rows[keys[kind]]
        members = rows[(key != "") & key.duplicated(keep=False)]
        for number, (_, part) in enumerate(members.groupby(keys[kind], sort=True), start=1):
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
