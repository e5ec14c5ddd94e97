"""Label fixes as data: `data/relabels.csv`, read and applied by the split.

One row per fix: `path` (a file as data/raw holds it, `<class>/<file>` or
`<split>/<class>/<file>`: the form the audit's suspects table gives), `label` (the class the
image belongs to, or `drop` to leave it out) and `reason`. The split places a relabelled image
under its new class and lists a dropped one in `rejected.csv` with the reason; data/raw and the
user's source folder are never changed, so a fix is one commit that `dvc repro` re-runs from.
"""

import logging
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from pipeline.common.log import PipelineError
from pipeline.imagedata import manifest as mf

log = logging.getLogger(__name__)

COLUMNS = ("path", "label", "reason")
DROP = "drop"
MESSAGE_LINES = 20  # rows listed in an error before it says "and N more"


class RelabelError(PipelineError, ValueError):
    """`data/relabels.csv` is malformed, or names a file or class the data does not have."""


def _listed(items: list[str]) -> str:
    shown = [f"  {item}" for item in items[:MESSAGE_LINES]]
    if len(items) > MESSAGE_LINES:
        shown.append(f"  ... and {len(items) - MESSAGE_LINES} more")
    return "\n".join(shown)


def read_relabels(path: Path) -> pd.DataFrame:
    """The fixes in `path` (columns path, label, reason; text, stripped); none when the file
    does not exist. A missing column, an empty path or label, or a path given twice is an
    error naming the file and its lines (line 1 is the header)."""
    if not path.exists():
        return pd.DataFrame(columns=list(COLUMNS))
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise RelabelError(f"{path}: not a readable CSV file ({error})") from None
    missing = [column for column in COLUMNS if column not in table.columns]
    if missing:
        raise RelabelError(
            f"{path} lacks the column(s) {', '.join(missing)}: its header must be "
            f"{','.join(COLUMNS)} (found {','.join(map(str, table.columns)) or 'nothing'})"
        )
    table = table[list(COLUMNS)].apply(lambda column: column.str.strip())
    line = pd.Series(range(2, len(table) + 2), index=table.index)
    empty = table[(table["path"] == "") | (table["label"] == "")]
    if len(empty):
        lines = ", ".join(map(str, line[empty.index]))
        raise RelabelError(f"{path}: line(s) {lines} lack a path or a label")
    twice = table[table["path"].duplicated(keep=False)]
    if len(twice):
        rows = [f"{p} (line {line[i]})" for i, p in twice["path"].items()]
        raise RelabelError(f"{path} names a file more than once:\n{_listed(rows)}")
    return table.reset_index(drop=True)


def apply_relabels(table: pd.DataFrame, relabels: pd.DataFrame, source: str) -> pd.DataFrame:
    """The split's `table` (one row per raw file: raw_path, label, status, reason) with the
    fixes applied: a relabelled row takes its new label and keeps the old one in
    `relabelled_from`; a dropped one becomes EXCLUDED with the reason. Each fix must name a
    file of data/raw and a class it has (or `drop`); `source` names the fixes in messages."""
    table = table.copy()
    table["relabelled_from"] = ""
    if relabels.empty:
        return table
    index = pd.Series(table.index, index=table["raw_path"])
    unknown = relabels.loc[~relabels["path"].isin(index.index), "path"].tolist()
    if unknown:
        raise RelabelError(
            f"{source} names {len(unknown)} file(s) that data/raw does not have (a path is "
            f"as data/raw and the audit's suspects.csv give it, e.g. "
            f"{table['raw_path'].iloc[0]}):\n{_listed(unknown)}"
        )
    classes = set(table["label"]) - {""}
    bad = relabels[(relabels["label"] != DROP) & ~relabels["label"].isin(classes)]
    if len(bad):
        rows = [f"{r.path} -> {r.label!r}" for r in bad.itertuples()]
        raise RelabelError(
            f"{source} gives label(s) that are not classes of the data (its classes: "
            f"{', '.join(sorted(classes))}; or {DROP!r} to leave the file out):\n{_listed(rows)}"
        )
    rows = index[relabels["path"]].to_numpy()
    same = relabels["label"].to_numpy() == table.loc[rows, "label"].to_numpy()
    if same.any():
        log.warning(
            f"{source}: {int(same.sum())} fix(es) give the label the file already has, e.g. "
            f"{relabels['path'][same].iloc[0]}"
        )
    drop = relabels["label"].to_numpy() == DROP
    dropped, moved = rows[drop], rows[~drop & ~same]
    table.loc[dropped, "status"] = [
        status if status in (mf.REJECTED, mf.IGNORED) else mf.EXCLUDED
        for status in table.loc[dropped, "status"]
    ]
    table.loc[dropped, "reason"] = [
        f"{source}: drop" + (f" ({why})" if why else "") for why in relabels.loc[drop, "reason"]
    ]
    table.loc[moved, "relabelled_from"] = table.loc[moved, "label"]
    table.loc[moved, "label"] = relabels.loc[~drop & ~same, "label"].to_numpy()
    return table


def carried_over(
    previous: Mapping[tuple[str, str], str], table: pd.DataFrame
) -> dict[tuple[str, str], str]:
    """The previous split's placements (keyed by label and content) with every relabelled
    image's entry moved to its new label, so a fix changes an image's class, not its split."""
    carried = dict(previous)
    moved = table[table["relabelled_from"] != ""]
    for old, new, digest in zip(
        moved["relabelled_from"], moved["label"], moved["sha256"], strict=True
    ):
        if (old, digest) in carried and (new, digest) not in carried:
            carried[(new, digest)] = carried[(old, digest)]
    return carried


def summary(table: pd.DataFrame, relabels: pd.DataFrame, digest: str | None) -> dict:
    """What the split records about the fixes it applied (split.json, the MLflow run)."""
    return {
        "sha256": digest,
        "rows": len(relabels),
        "relabelled": int((table["relabelled_from"] != "").sum()),
        "dropped": int((relabels["label"] == DROP).sum()),
    }
