"""Stage `audit`: data health. Out-of-sample probabilities for every placed image (k-fold
cross-fitting, `curation.crossfit`), the label issues cleanlab finds in them
(`curation.label_issues`), cleanvision's image checks (`curation.image_checks`) and one review
page where a fix is chosen as a row of `data/relabels.csv` (which the split applies)."""

import logging
import os
import time
from typing import NamedTuple

import keras
import numpy as np
import pandas as pd

from pipeline.common.files import write_csv, write_json
from pipeline.common.log import run_stage
from pipeline.common.names import dataset_name
from pipeline.common.native import CUDA_INIT_FAILED, native_stderr
from pipeline.contracts import read_labels
from pipeline.curation import image_checks
from pipeline.curation.crossfit import CrossFit, cross_fit
from pipeline.curation.label_issues import pair_counts, suspects_table
from pipeline.curation.settings import resolve_audit
from pipeline.imagedata import manifest as mf
from pipeline.imagedata.dataset import label_indices, load_images
from pipeline.imagedata.manifest import in_splits, read_manifest, split_channels
from pipeline.params import Params, load_params
from pipeline.paths import (
    AUDIT_METRICS,
    DUPLICATE_SETS_CSV,
    FOLDS_CSV,
    IMAGE_ISSUE_COUNTS_CSV,
    IMAGE_ISSUES_CSV,
    LABELS_FILE,
    OUT_OF_SAMPLE_CSV,
    REVIEW_PAGE,
    ROOT,
    SPLIT_DIR,
    SUSPECTS_CSV,
    SUSPECTS_PNG,
)
from pipeline.reporting.html import review_report, write_page
from pipeline.reporting.plots import error_gallery_figure, save_figure
from pipeline.training.devices import cpu_has_bf16

log = logging.getLogger(__name__)

FIGURE_SIZE = 32  # suspects drawn in suspects.png


class Checked(NamedTuple):
    """What the image checks found: the flagged images, counts per class (empty without
    checks) and the duplicate sets."""

    flagged: pd.DataFrame
    counts: pd.DataFrame
    sets: pd.DataFrame


def run_checks(rows: pd.DataFrame, checks: list[str]) -> Checked:
    """The image checks `checks` on the placed images: cleanvision's on the files, the
    duplicates as the split decided them."""
    flags, scores = image_checks.cleanvision_checks(rows, checks, SPLIT_DIR, os.cpu_count() or 1)
    flags = pd.concat([flags, image_checks.duplicate_flags(rows, checks)], axis=1)[checks]
    flagged = image_checks.issue_table(rows, flags, scores)
    counts = image_checks.counts_per_class(rows, flagged, checks) if checks else pd.DataFrame()
    return Checked(flagged, counts, image_checks.duplicate_sets(rows, checks))


def split_conflicts(manifest: pd.DataFrame) -> pd.DataFrame:
    """The images the split left out as one picture under two classes, with why."""
    conflicted = manifest[manifest["status"] == mf.CONFLICT]
    return conflicted[["raw_path", "label", "reason"]].reset_index(drop=True)


def draw_suspects(suspects: pd.DataFrame, rows: pd.DataFrame, images: np.ndarray) -> None:
    """The first FIGURE_SIZE suspects as a captioned grid (suspects.png)."""
    top = suspects.head(FIGURE_SIZE)
    where = pd.Series(rows.index, index=rows["path"])
    captions = [
        f"#{r.rank} given {r.given_label}\nlooks like {r.suggested_label} ({r.p_suggested:.0%})"
        for r in top.itertuples()
    ]
    pictures = [images[where[path]].squeeze() for path in top["path"]]
    title = f"The {len(top)} most likely label mistakes (out-of-sample, cleanlab)"
    figure = error_gallery_figure(pictures, captions, 8, title, "No label issue found")
    save_figure(figure, SUSPECTS_PNG)


def audit_metrics(
    rows: pd.DataFrame,
    labels: np.ndarray,
    fit: CrossFit,
    suspects: pd.DataFrame,
    checked: Checked,
    conflicts: pd.DataFrame,
) -> dict:
    """metrics.json's counts: suspects, the fold models' accuracy, images each check flags."""
    counts, sets = checked.counts, checked.sets
    checks = [column for column in counts.columns if column not in ("class", "images")]
    return {
        "images": len(rows),
        "suspects": len(suspects),
        "suspect_share": len(suspects) / len(rows),
        "suspects_per_split": suspects["split"].value_counts().to_dict(),
        "cross_fit_accuracy": float((fit.probabilities.argmax(1) == labels).mean()),
        "folds": len(fit.folds),
        "image_issues": {check: int(counts[check].iloc[-1]) for check in checks},
        "duplicate_sets_across_classes": int(sets["conflicting_labels"].sum()),
        "conflicts_left_out_by_split": len(conflicts),
    }


def main() -> None:
    params = load_params()
    cfg, seed = params.audit, params.base.seed
    classes = read_labels(LABELS_FILE).classes
    manifest = read_manifest()
    rows = in_splits(manifest).reset_index(drop=True)
    labels = np.array(label_indices(rows["label"], classes))
    sides = np.minimum(rows["width"].astype(int), rows["height"].astype(int))
    settings = resolve_audit(cfg, sides, cpu_has_bf16())
    size, precision, channels = settings.image_size, settings.precision, split_channels()
    # the image checks first: cleanvision's worker processes are forked from this one, which
    # is small before TensorFlow has decoded the images and trained the fold models
    started = time.perf_counter()
    checks = [c for c in cfg.image_checks if not (c == "grayscale" and channels == 1)]
    checked = run_checks(rows, checks)
    flagged, counts, sets = checked
    check_seconds = time.perf_counter() - started

    keras.mixed_precision.set_global_policy(precision)
    with native_stderr(CUDA_INIT_FAILED):  # train says which device there is
        images = load_images(rows, classes, size, channels)
    groups = rows["group"].where(rows["group"] != "", rows["sha256"]).to_numpy()
    started = time.perf_counter()
    fit = cross_fit(images, labels, groups, len(classes), settings, seed)
    fit_seconds = time.perf_counter() - started
    suspects = suspects_table(rows, labels, fit.probabilities, classes, cfg)

    out_of_sample = rows[["raw_path", "path", "split", "label"]].assign(fold=fit.fold)
    probabilities = pd.DataFrame(fit.probabilities.round(5), columns=[f"p_{c}" for c in classes])
    write_csv(pd.concat([out_of_sample, probabilities], axis=1), OUT_OF_SAMPLE_CSV)
    for table, path in (
        (fit.folds, FOLDS_CSV),
        (suspects, SUSPECTS_CSV),
        (flagged, IMAGE_ISSUES_CSV),
        (counts, IMAGE_ISSUE_COUNTS_CSV),
        (sets, DUPLICATE_SETS_CSV),
    ):
        write_csv(table, path)
    draw_suspects(suspects, rows, images)
    left_out = split_conflicts(manifest)
    metrics = audit_metrics(rows, labels, fit, suspects, checked, left_out) | {
        "cross_fit_seconds": round(fit_seconds, 1),
        "image_check_seconds": round(check_seconds, 1),
        # what the audit's autos resolved to (`curation.settings`)
        **{"image_size": size, "precision": precision},
        **{"epochs": settings.epochs, "batch_size": settings.batch_size},
        **{"filter_by": cfg.filter_by, "rank_by": cfg.rank_by},
    }
    write_json(AUDIT_METRICS, metrics)
    write_review(params, metrics, suspects, checked, left_out)
    log.info(
        f"{len(suspects)} of {len(rows)} images suspected of a wrong label "
        f"({metrics['suspect_share']:.1%}; out-of-sample accuracy "
        f"{metrics['cross_fit_accuracy']:.4f}, {cfg.folds} folds in {fit_seconds:.0f} s); "
        + (f"image checks in {check_seconds:.0f} s: {metrics['image_issues']}; " if checks else "")
        + f"review {REVIEW_PAGE.relative_to(ROOT)}"
    )


def write_review(
    params: Params,
    metrics: dict,
    suspects: pd.DataFrame,
    checked: Checked,
    left_out: pd.DataFrame,
) -> None:
    """The review page: the suspects to look at first, the image checks, the conflicts."""
    counts, sets = checked.counts, checked.sets
    page = review_report(
        dataset=dataset_name(params.ingest.source, params.ingest.classes),
        metrics=metrics,
        suspects=suspects.head(params.audit.review_size),
        pairs=pair_counts(suspects),
        checks=counts,
        conflicts=sets[sets["conflicting_labels"]],
        left_out=left_out,
        root=SPLIT_DIR,
    )
    write_page(page, REVIEW_PAGE)


if __name__ == "__main__":
    run_stage("audit", main)
