"""Stage `validate`: the great-expectations gate between the split and training.

Every image in the split is decoded and perceptually hashed (in parallel); tables derived from
the manifest, ingest's listing of the raw folder and those facts are checked against
expectation suites (`imagedata.checks`). The results go to `validation.json`
(machine-readable) and to great-expectations' Data Docs, a static site that renders offline.
Any failed expectation makes the stage exit non-zero, so `dvc repro` stops before training.
"""

import logging

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from pipeline.common.files import staged_dir, write_csv
from pipeline.common.log import run_stage
from pipeline.contracts import ValidationResult, expectation_name, read_labels, write_validation
from pipeline.imagedata import manifest as mf
from pipeline.imagedata.checks import (
    Evidence,
    ValidationFailed,
    build_checks,
    confirm_near_duplicates,
    failure_message,
    image_facts,
    judged,
    run_checks,
)
from pipeline.imagedata.images import Rules
from pipeline.params import SplitParams, load_params
from pipeline.paths import (
    DATA_DOCS_DIR,
    LABELS_FILE,
    NEAR_DUPLICATES_FILE,
    NEAR_DUPLICATES_PNG,
    RAW_LISTING,
    ROOT,
    SPLIT_DIR,
    SPLIT_MANIFEST,
    VALIDATION_FILE,
)
from pipeline.reporting.plots import near_duplicate_figure, save_figure
from pipeline.reporting.web_assets import AssetError, localise_pages

log = logging.getLogger(__name__)

PAIRS_SHOWN = 8  # pairs drawn of each kind, a seeded sample
THUMBNAIL = 96  # pixels a side at most, per image drawn


def _grey(path: str) -> np.ndarray:
    with Image.open(SPLIT_DIR / path) as image:
        grey = image.convert("L")
        grey.thumbnail((THUMBNAIL, THUMBNAIL))
        return np.asarray(grey)


def pair_figure(near: pd.DataFrame, cfg: SplitParams) -> Figure:
    """A seeded sample of the confirmed near duplicates and of the candidates their pixels
    rejected, each validation or test image beside its closest training image; a pair of a
    group the split spread over the splits on purpose (`split.inseparable_groups: split`)
    says so, as a leak would not."""
    candidates = near[near["correlation"].notna()]
    spread = int((near["confirmed"] & near["spread"]).sum())
    apart = f", {spread} of them spread on purpose (split.inseparable_groups)" if spread else ""
    kinds = {
        f"Near duplicates, {near['confirmed'].sum()} confirmed (pixel correlation >= "
        f"{cfg.near_duplicate_correlation}){apart}; held-out | training image": near[
            near["confirmed"]
        ],
        f"Rejected, {(~candidates['confirmed']).sum()} candidates within "
        f"{cfg.near_duplicate_distance} bits of a training image's hash (or a crop's) but "
        "below the correlation": candidates[~candidates["confirmed"]],
    }
    sections = {}
    for title, rows in kinds.items():
        shown = rows.sample(min(len(rows), PAIRS_SHOWN), random_state=0)
        sections[title] = [
            (
                _grey(row.path),
                _grey(row.nearest_train_path),
                f"{row.path}\n{row.nearest_train_path}\nr = {row.correlation:.4f}, "
                f"{row.distance} bits"
                + (f", {row.cropped} cropped" if row.cropped else "")
                + (", spread" if row.spread and row.confirmed else ""),
            )
            for row in shown.sort_values("correlation", ascending=False).itertuples()
        ]
    return near_duplicate_figure(sections)


def main() -> None:
    params = load_params()
    cfg = params.validate_
    manifest = mf.read_manifest(SPLIT_MANIFEST)
    placed = mf.in_splits(manifest)
    classes = read_labels(LABELS_FILE).classes
    raw = mf.read_raw_listing(RAW_LISTING)
    given = raw["given_split"].ne("").any()  # the source gave its splits
    channels = mf.split_channels(SPLIT_DIR)
    rules = Rules.of(params.split)  # what the split decided by, verified here with it
    facts = image_facts(SPLIT_DIR, placed["path"].tolist(), channels, rules)
    near = confirm_near_duplicates(SPLIT_DIR, placed, facts, params.split)
    evidence = Evidence(manifest, raw, facts, near, classes)
    checks = build_checks(evidence, params.split, channels, cfg, given)
    with staged_dir(DATA_DOCS_DIR) as docs:
        outcomes = run_checks(checks, docs)
        try:
            external = localise_pages(docs)
        except AssetError as error:
            log.warning(f"{error}; the Data Docs will load their styles from CDNs")
            external = []
    if external:
        log.warning(f"the Data Docs still load {len(external)} addresses online: {external}")
    close = near[near["confirmed"]]
    # every candidate, the closest first: those confirmed, then the look-alikes
    candidates = near[near["correlation"].notna()]
    ranked = candidates.sort_values(["correlation", "path"], ascending=[False, True])
    write_csv(ranked, NEAR_DUPLICATES_FILE)
    save_figure(pair_figure(near, params.split), NEAR_DUPLICATES_PNG)
    failed, reported = judged(outcomes, cfg, given)  # the gate's rule, in its package
    if reported:
        report = VALIDATION_FILE.relative_to(ROOT)
        log.warning(failure_message(reported, len(outcomes), report, "unmet, reported only"))
    result = ValidationResult(
        success=not failed,
        evaluated=len(outcomes),
        failed=len(failed),
        images=len(facts),
        near_duplicates=len(close),
        results=outcomes,
        reported=sorted({expectation_name(o) for o in reported}),
    )
    write_validation(VALIDATION_FILE, result)
    report = VALIDATION_FILE.relative_to(ROOT)
    docs_index = (DATA_DOCS_DIR / "index.html").relative_to(ROOT)
    if failed:
        raise ValidationFailed(
            failure_message(failed, len(outcomes), report) + f"\nData Docs: {docs_index}"
        )
    log.info(
        f"all {len(outcomes)} expectations met on {len(facts)} images -> {report}, {docs_index}"
    )


if __name__ == "__main__":
    run_stage("validate", main)
