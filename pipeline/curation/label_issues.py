"""Label issues: the images whose given label the out-of-sample probabilities contradict,
found and ranked by cleanlab's confident learning (`cleanlab.filter.find_label_issues`).

Each suspect comes with its evidence: the probability the fold model that never saw it gave
the given label and the label it suggests, cleanlab's label-quality score, and the line that
accepts the fix in `data/relabels.csv`.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores

from pipeline.contracts import ContractError
from pipeline.params import AuditParams

SUSPECT_COLUMNS = [
    "rank",  # 1 = the most likely mistake
    "raw_path",  # as data/raw has it: the path data/relabels.csv takes
    "path",  # inside data/split
    "split",
    "given_label",
    "relabelled_from",  # the class data/raw has it under, when data/relabels.csv moved it
    "suggested_label",  # the class the out-of-sample probabilities favour
    "p_given",  # out-of-sample probability of the given label
    "p_suggested",
    "label_quality",  # cleanlab's score (rank_by): low means likely wrong
    "reason",  # the evidence, as a relabels.csv row gives it
    "relabel",  # the line of data/relabels.csv that accepts the suggestion
]


def relabel_reason(label: str, p_given: float, p_suggested: float) -> str:
    """The reason a relabel row gives: the audit's evidence."""
    return f"audit: p({label})={p_suggested:.2f}, p(given)={p_given:.2f}"


def relabel_line(raw_path: str, label: str, reason: str) -> str:
    """One row of data/relabels.csv, quoted as CSV needs."""

    def quoted(text: str) -> str:
        return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(c in text for c in ',"\n') else text

    return ",".join(quoted(part) for part in (raw_path, label, reason))


def suspects_table(
    rows: pd.DataFrame,
    labels: np.ndarray,
    probabilities: np.ndarray,
    classes: list[str],
    cfg: AuditParams,
) -> pd.DataFrame:
    """The label issues among `rows` (manifest rows, aligned with `labels` and the
    out-of-sample `probabilities`), most likely mistakes first (SUSPECT_COLUMNS)."""
    ranked = find_label_issues(
        labels,
        probabilities,
        filter_by=cfg.filter_by,
        return_indices_ranked_by=cfg.rank_by,
        n_jobs=1,
    )
    scores = get_label_quality_scores(labels, probabilities, method=cfg.rank_by)
    suggested = probabilities[ranked].argmax(axis=1)
    names = np.asarray(classes, dtype=object)
    p_given = probabilities[ranked, labels[ranked]]
    p_suggested = probabilities[ranked, suggested]
    picked = rows.iloc[ranked]
    table = pd.DataFrame(
        {
            "rank": np.arange(1, len(ranked) + 1),
            "raw_path": picked["raw_path"].to_numpy(),
            "path": picked["path"].to_numpy(),
            "split": picked["split"].to_numpy(),
            "given_label": names[labels[ranked]],
            "relabelled_from": picked.get(
                "relabelled_from", pd.Series("", index=picked.index)
            ).to_numpy(),
            "suggested_label": names[suggested],
            "p_given": p_given.round(4),
            "p_suggested": p_suggested.round(4),
            "label_quality": scores[ranked].round(4),
        }
    )
    table["reason"] = reasons = [
        relabel_reason(label, given, best)
        for label, given, best in zip(table["suggested_label"], p_given, p_suggested, strict=True)
    ]
    table["relabel"] = [
        relabel_line(path, label, reason)
        for path, label, reason in zip(
            table["raw_path"], table["suggested_label"], reasons, strict=True
        )
    ]
    return table[SUSPECT_COLUMNS]


def pair_counts(suspects: pd.DataFrame) -> pd.DataFrame:
    """Suspects per (given, suggested) class pair, the largest first."""
    counts = suspects.groupby(["given_label", "suggested_label"]).size().rename("suspects")
    return counts.sort_values(ascending=False, kind="stable").reset_index()


def found_against(suspects: pd.DataFrame, flipped: set[str], total: int) -> dict[str, float]:
    """Precision and recall of the suspects' raw paths against the paths known to be flipped
    (a planted-noise benchmark or test), and the share of the data flagged."""
    flagged = set(suspects["raw_path"])
    hits = len(flagged & flipped)
    return {
        "flagged": len(flagged),
        "flipped": len(flipped),
        "found": hits,
        "precision": hits / len(flagged) if flagged else 0.0,
        "recall": hits / len(flipped) if flipped else 0.0,
        "flagged_share": len(flagged) / total if total else 0.0,
    }


def read_suspects(path: Path) -> pd.DataFrame:
    """The suspects table the audit wrote (SUSPECT_COLUMNS), every column as text but rank."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise ContractError(f"{path} is missing: run `dvc repro audit`") from None
    missing = [column for column in SUSPECT_COLUMNS if column not in table.columns]
    if missing:
        raise ContractError(f"{path} lacks {', '.join(missing)}: run `dvc repro audit`")
    return table.astype({"rank": int})
