"""Stage `source`: the fingerprint of what `ingest.source` names, in `data/source.json`.

DVC cannot declare a folder outside the project (or a built-in dataset) as a dependency whose
path a param chooses, so this stage runs on every `dvc repro` (`always_changed`) and writes a
digest of the source's files; ingest depends on that file. When nothing in the source changed
the digest is the same and ingest, with everything after it, is skipped; when a file was
added, removed, renamed or changed, ingest runs again.
"""

import logging

from pipeline.common.files import write_json
from pipeline.common.log import run_stage
from pipeline.imagedata.sources import fingerprint
from pipeline.params import load_params
from pipeline.paths import ROOT, SOURCE_FILE

log = logging.getLogger(__name__)


def main() -> None:
    source = load_params().ingest.source
    found = fingerprint(source)
    write_json(SOURCE_FILE, found)
    entries = f"{found['entries']} entries, " if "entries" in found else ""
    log.info(f"{source}: {entries}fingerprint -> {SOURCE_FILE.relative_to(ROOT)}")


if __name__ == "__main__":
    run_stage("source", main)
