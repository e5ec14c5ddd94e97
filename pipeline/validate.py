"""Stage `validate`: the great-expectations gate between the split and training.

Every image in the split is decoded and perceptually hashed (in parallel); tables derived from
the manifest, the raw folder and those facts are checked against expectation suites
(`imagedata.checks`). The results go to `validation.json` (machine-readable) and to
great-expectations' Data Docs, a static site that renders offline. Any failed expectation
makes the stage exit non-zero, so `dvc repro` stops before training.
"""

import logging

from pipeline.common.files import staged_dir, write_csv
from pipeline.common.log import run_stage
from pipeline.contracts import ValidationResult, read_labels, write_validation
from pipeline.imagedata import manifest as mf
from pipeline.imagedata.checks import (
    ValidationFailed,
    build_checks,
    failure_message,
    image_facts,
    nearest_training_image,
    run_checks,
)
from pipeline.imagedata.images import list_images
from pipeline.params import load_params
from pipeline.paths import (
    DATA_DOCS_DIR,
    LABELS_FILE,
    NEAR_DUPLICATES_FILE,
    RAW_DIR,
    ROOT,
    SPLIT_DIR,
    SPLIT_MANIFEST,
    VALIDATION_FILE,
)
from pipeline.reporting.web_assets import AssetError, localise_pages

log = logging.getLogger(__name__)


def main() -> None:
    params = load_params()
    cfg = params.validate_
    manifest = mf.read_manifest(SPLIT_MANIFEST)
    placed = mf.in_splits(manifest)
    classes = read_labels(LABELS_FILE).classes
    raw = list_images(RAW_DIR)
    facts = image_facts(SPLIT_DIR, placed["path"].tolist())
    hashes = facts.set_index("path")["phash"]
    near = nearest_training_image(placed, hashes)
    checks = build_checks(
        manifest, raw, facts, near, classes, params.split.fractions, params.base.channels, cfg
    )
    with staged_dir(DATA_DOCS_DIR) as docs:
        outcomes = run_checks(checks, docs)
        try:
            external = localise_pages(docs)
        except AssetError as error:
            log.warning(f"{error}; the Data Docs will load their styles from CDNs")
            external = []
    if external:
        log.warning(f"the Data Docs still load {len(external)} addresses online: {external}")
    close = near[near["distance"] <= cfg.near_duplicate_distance]
    write_csv(close.sort_values(["distance", "path"]), NEAR_DUPLICATES_FILE)
    failed = [o for o in outcomes if not o["success"]]
    result = ValidationResult(
        success=not failed,
        evaluated=len(outcomes),
        failed=len(failed),
        images=len(facts),
        near_duplicates=len(close),
        results=outcomes,
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
