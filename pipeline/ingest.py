"""Stage `ingest`: materialise the dataset `ingest.source` names as `data/raw` (which sources
there are, and how each is written: `imagedata.sources`), and list what it holds in
`data/raw_listing.csv` (the gate accounts every file against it, so DVC need not check the
folder's files once more for validate)."""

import logging

from pipeline.common.files import staged_dir
from pipeline.common.log import run_stage
from pipeline.imagedata.images import given_splits, list_raw, write_raw_listing
from pipeline.imagedata.sources import write_source
from pipeline.params import load_params
from pipeline.paths import RAW_DIR, RAW_LISTING, ROOT

log = logging.getLogger(__name__)


def main() -> None:
    params = load_params().ingest
    with staged_dir(RAW_DIR) as staging:
        count = write_source(params.source, staging, params.classes)
    write_raw_listing(list_raw(RAW_DIR), RAW_LISTING)
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
