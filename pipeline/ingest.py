"""Stage `ingest`: materialise the dataset `ingest.source` names as `data/raw` (which sources
there are, and how each is written: `imagedata.sources`), and list what it holds in
`data/raw_listing.csv`, with every entry of the source it did not copy and why (the split
reports those; the gate accounts every file against the listing, so DVC need not check the
folder's files once more for validate)."""

import logging

import pandas as pd

from pipeline.common.files import staged_dir
from pipeline.common.log import run_stage
from pipeline.imagedata.images import given_splits, is_ignored, list_raw, write_raw_listing
from pipeline.imagedata.sources import write_source
from pipeline.params import load_params
from pipeline.paths import RAW_DIR, RAW_LISTING, ROOT

log = logging.getLogger(__name__)


def main() -> None:
    params = load_params().ingest
    with staged_dir(RAW_DIR) as staging:
        count, skipped = write_source(params.source, staging, params.classes)
    listing = list_raw(RAW_DIR)
    if len(skipped):
        listing = pd.concat([listing, skipped], ignore_index=True)
        ignored = int(skipped["problem"].map(is_ignored).sum())
        log.info(
            f"not copied: {len(skipped) - ignored} entries the split lists as rejected, "
            f"{ignored} hidden files or the OS's small files (listed as ignored)"
        )
    write_raw_listing(listing, RAW_LISTING)
    splits = given_splits(RAW_DIR)
    folders = [RAW_DIR / s for s in splits] or [RAW_DIR]
    classes = {p.name for folder in folders for p in folder.iterdir() if p.is_dir()}
    chosen = " (ingest.classes)" if params.classes else ""
    given = f", splits given: {', '.join(splits)}" if splits else ""
    log.info(
        f"{count} images in {len(classes)} classes{chosen}{given} -> {RAW_DIR.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    run_stage("ingest", main)
