"""Stage `split`: a leakage-free, stable, stratified split of `data/raw` into
`data/split/{train,validation,test}/<class>/` (how: `imagedata.assignment`), with the
manifest, the labels file, a summary per class and every file left out with its reason.
"""

import logging
import tempfile
from pathlib import Path

from pipeline.common.files import file_digest, staged_dir
from pipeline.common.log import run_stage
from pipeline.imagedata.assignment import (
    SplitSetup,
    build_split,
    placed_channels,
    previous_assignments,
    write_split,
)
from pipeline.imagedata.manifest import read_raw_listing
from pipeline.imagedata.relabels import read_relabels
from pipeline.imagedata.relabels import summary as relabel_summary
from pipeline.params import load_params
from pipeline.paths import (
    RAW_DIR,
    RAW_LISTING,
    RELABELS_FILE,
    ROOT,
    SPLIT_DIR,
    SPLITS,
    WORKING_COPIES_DIR,
)

log = logging.getLogger(__name__)


def main() -> None:
    params = load_params()
    cfg, seed, channels = params.split, params.base.seed, params.base.channels
    previous = previous_assignments(SPLIT_DIR, seed, cfg.fractions)
    listed = read_raw_listing(RAW_LISTING)  # what ingest saw, with what it did not copy
    skipped = listed[listed["problem"] != ""]
    relabels = read_relabels(RELABELS_FILE)  # label fixes, committed (docs/fixing-labels.md)
    source = RELABELS_FILE.relative_to(ROOT).as_posix()
    WORKING_COPIES_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="split-", dir=WORKING_COPIES_DIR) as folder:
        working = Path(folder)  # each image's working-size copy, made once while checking it
        table = build_split(
            RAW_DIR,
            SplitSetup(cfg, seed, channels),
            previous,
            skipped=skipped,
            relabels=relabels,
            relabels_source=source,
            working=working,
        )
        channels = placed_channels(table, channels)
        digest = file_digest(RELABELS_FILE) if RELABELS_FILE.exists() else None
        fixes = relabel_summary(table, relabels, digest)
        with staged_dir(SPLIT_DIR) as staging:
            write_split(table, RAW_DIR, staging, SplitSetup(cfg, seed, channels), fixes, working)
    placed = table[table["split"] != ""]
    counts = placed["split"].value_counts().reindex(list(SPLITS), fill_value=0)
    left_out = table.loc[table["split"] == "", "status"].value_counts()
    keys = zip(placed["label"], placed["sha256"], strict=True)
    kept = sum(previous.get(key) == name for key, name in zip(keys, placed["split"], strict=True))
    log.info(
        f"{len(placed)} of {len(table)} files in {placed['label'].nunique()} classes -> "
        + ", ".join(f"{name} {counts[name]}" for name in SPLITS)
        + (
            f"; left out: {left_out.to_dict()} (see data/split/rejected.csv)"
            if len(left_out)
            else ""
        )
        + (f"; {kept} kept their previous split" if previous else "")
        + (
            f"; {source}: {fixes['relabelled']} relabelled, {fixes['dropped']} dropped"
            if len(relabels)
            else ""
        )
        + f"; {'RGB' if channels == 3 else 'grayscale'} (base.channels: {params.base.channels})"
        + f", {int(table['convert'].sum())} converted -> {SPLIT_DIR.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    run_stage("split", main)
