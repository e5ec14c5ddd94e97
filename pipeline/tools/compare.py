"""`make compare`: the experiment's runs side by side, as a Markdown table.

Only the params that differ between the runs shown are columns (a param every run shares says
nothing about why their metrics differ), then the key test and training metrics, sorted by the
metric asked for. Printed, and written to `reports/compare.md`.
"""

import argparse
from pathlib import Path

import pandas as pd

from pipeline.common.files import write_text
from pipeline.common.log import PipelineError, run_stage
from pipeline.evaluation.direction import lower_is_better
from pipeline.paths import COMPARE_FILE, ROOT
from pipeline.tracking.records import search_runs

KEY_METRICS = (
    "test_accuracy",
    "test_macro_f1",
    "test_log_loss",
    "test_expected_calibration_error",
    "test_baseline_svc_accuracy",
    "best_val_accuracy",
    "epochs_run",
    "training_seconds",
    "images_per_second_later_epochs",
)


class CompareError(PipelineError, ValueError):
    """Nothing to compare, or a sort key no run has."""


def comparison_table(
    runs: pd.DataFrame, sort_by: str, ascending: bool | None = None
) -> pd.DataFrame:
    """One row per run: identity, the params that differ, the key metrics; best first."""
    if runs.empty:
        raise CompareError("the experiment has no runs to compare: run `make run` first")
    metric_column = f"metrics.{sort_by}"
    if metric_column not in runs.columns:
        known = sorted(c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics."))
        raise CompareError(f"no run has the metric {sort_by!r}; metrics: {', '.join(known)}")
    params = [
        c
        for c in sorted(runs.columns)
        if c.startswith("params.") and runs[c].astype(str).nunique(dropna=False) > 1
    ]
    metrics = [f"metrics.{m}" for m in KEY_METRICS if f"metrics.{m}" in runs.columns]
    if metric_column not in metrics:
        metrics.insert(0, metric_column)
    table = pd.DataFrame(
        {
            "run": runs["run_id"].str[:8],
            "name": runs.get("tags.mlflow.runName", pd.Series("", index=runs.index)),
            "status": runs["status"],
            "started": pd.to_datetime(runs["start_time"]).dt.strftime("%Y-%m-%d %H:%M"),
            "commit": runs.get("tags.git.commit", pd.Series("", index=runs.index)).str[:8],
        }
    )
    for column in params + metrics:
        table[column.split(".", 1)[1]] = runs[column]
    if ascending is None:
        ascending = lower_is_better(sort_by)
    return table.sort_values(sort_by, ascending=ascending, na_position="last", kind="stable")


def markdown(table: pd.DataFrame, sort_by: str, experiment: str) -> str:
    header = (
        f"# Runs of experiment `{experiment}`, sorted by `{sort_by}`\n\n"
        f"{len(table)} runs; params shown are those that differ between them.\n\n"
    )
    shown = table.copy()
    for column in shown.columns:  # params stay as logged; metrics get four decimals
        if pd.api.types.is_float_dtype(shown[column]):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
    shown = shown.fillna("").astype(str)
    return header + shown.to_markdown(index=False, disable_numparse=True) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sort", default="test_accuracy", help="metric to sort by")
    order = parser.add_mutually_exclusive_group()
    order.add_argument("--ascending", action="store_true", default=None)
    order.add_argument("--descending", dest="ascending", action="store_false")
    parser.add_argument("--all", action="store_true", help="include failed and killed runs")
    parser.add_argument("--last", type=int, default=20, help="the newest N runs (default 20)")
    parser.add_argument("--output", type=Path, default=COMPARE_FILE)
    parser.add_argument("--name", default="", help="only runs whose name starts with this")
    args = parser.parse_args(argv)

    experiment, runs = search_runs(args.name, args.all, args.last)
    table = comparison_table(runs, args.sort, args.ascending)
    text = markdown(table, args.sort, experiment)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.output, text)
    print(text)
    shown = args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output
    print(f"compare: written to {shown}")


if __name__ == "__main__":
    run_stage("compare", main)
