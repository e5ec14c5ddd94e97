"""`make report`: what a change does to the pipeline, against a base branch, as Markdown.

`dvc metrics diff` and `dvc params diff` between the base revision (default `main`) and the
workspace, after `make run` has computed the workspace's metrics: the headline test metrics
with their change, every param and every metric that differs, the test confusion matrix as a
table, and the confusion-matrix and training-curve pictures beside the report. The pull-request
workflow (.github/workflows/ci.yml) uploads the folder as a build artifact and posts
comment.md (the same report, naming the pictures in the artifact instead of showing them) as
the job summary and a pull-request comment; locally it is the same command:

    make run && make report BASE=main   # reports/ci/report.md, its tables and pictures

Machine timings (seconds, images per second) change on every run, so they are listed apart
from the metrics that describe the model.
"""

import argparse
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from dvc.repo import Repo
from scmrepo.exceptions import RevError

from pipeline.common.files import staged_dir, write_csv
from pipeline.common.log import PipelineError, run_stage
from pipeline.evaluation.direction import higher_is_better, is_timing
from pipeline.paths import (
    CI_REPORT_DIR,
    CONFUSION_CSV,
    CONFUSION_PNG,
    HISTORY_FILE,
    HISTORY_PNG,
    METRICS_FILE,
    ROOT,
    TRAIN_METRICS_FILE,
)

ARTIFACT = "pipeline-report"  # the name the pull-request workflow uploads the folder under
# (metrics file, metric, label): always shown, changed or not
HEADLINE = (
    (METRICS_FILE, "accuracy", "test accuracy"),
    (METRICS_FILE, "macro_f1", "test macro F1"),
    (METRICS_FILE, "top_3_accuracy", "test top-3 accuracy"),
    (METRICS_FILE, "log_loss", "test log loss"),
    (METRICS_FILE, "expected_calibration_error", "test calibration error (ECE)"),
    (METRICS_FILE, "baseline_svc_accuracy", "SVC baseline, same split"),
    (TRAIN_METRICS_FILE, "best_val_loss", "best validation loss"),
    (TRAIN_METRICS_FILE, "best_val_accuracy", "best validation accuracy"),
    (TRAIN_METRICS_FILE, "epochs_run", "epochs run"),
)
PICTURES = (
    (CONFUSION_PNG, "Confusion matrix (test)"),
    (HISTORY_PNG, "Training curves"),
)
NEEDED = (METRICS_FILE, TRAIN_METRICS_FILE, CONFUSION_CSV, HISTORY_FILE, CONFUSION_PNG, HISTORY_PNG)
REPORT_NAME = "report.md"  # with the pictures beside it: the artifact, a local read
# the same without picture links, which would point nowhere in a pull-request comment or a
# job summary; it links to the CI run's artifact instead
COMMENT_NAME = "comment.md"


class ReportError(PipelineError, ValueError):
    """No such base revision, or the workspace lacks a result the report shows."""


@dataclass(frozen=True)
class Comparison:
    base: str  # the revision as the user named it
    base_commit: str
    head_commit: str
    metrics: pd.DataFrame  # file, metric, base, workspace, change
    params: pd.DataFrame  # file, param, base, workspace
    absent: tuple[str, ...] = ()  # metrics files dvc.yaml declares that the workspace lacks


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def diff_table(diff: dict, key: str) -> pd.DataFrame:
    """DVC's nested {file: {name: {old, new, diff}}} as one row per (file, name)."""
    rows = [
        {
            "file": file,
            key: name,
            "base": d.get("old"),
            "workspace": d.get("new"),
            "change": d.get("diff"),
        }
        for file, names in sorted(diff.get("diff", {}).items())
        for name, d in sorted(names.items())
    ]
    # object columns: ints stay ints, a value the base lacks stays None
    return pd.DataFrame(rows, columns=["file", key, "base", "workspace", "change"], dtype=object)


def check_workspace(root: Path) -> None:
    missing = [relative(path) for path in NEEDED if not (root / relative(path)).exists()]
    if missing:
        raise ReportError(
            f"the workspace has no {', '.join(missing)}: run the pipeline first (make run)"
        )


def absent_files(diff: dict, base: str) -> tuple[str, ...]:
    """The workspace's files that are not there (a stage not run: reported as such); raise on
    one DVC could not read. A file the base lacks only makes its metrics new."""
    errors = diff.get("errors", {}).get("workspace", {})
    if isinstance(errors, Exception):
        raise ReportError(f"DVC could not read the workspace: {errors}")
    unreadable = {f: e for f, e in errors.items() if not isinstance(e, FileNotFoundError)}
    if unreadable:
        named = "; ".join(f"{file}: {error}" for file, error in sorted(unreadable.items()))
        raise ReportError(f"unreadable in the workspace: {named}")
    if isinstance(diff.get("errors", {}).get(base), Exception):
        raise ReportError(f"DVC could not read revision {base!r}: {diff['errors'][base]}")
    return tuple(sorted(set(errors) - set(unreadable)))


def compare(root: Path, base: str) -> Comparison:
    """Metrics and params of the workspace at `root` against revision `base`."""
    check_workspace(root)
    with Repo(str(root)) as repo:
        try:
            base_commit = repo.scm.resolve_rev(base)
        except RevError:
            raise ReportError(
                f"unknown base revision {base!r}: fetch it (git fetch origin main; in GitHub "
                "Actions, actions/checkout with fetch-depth: 0) or name another (BASE=...)"
            ) from None
        head_commit = repo.scm.get_rev()
        metrics = repo.metrics.diff(a_rev=base, all=True)
        params = repo.params.diff(a_rev=base)
    absent = absent_files(metrics, base) + absent_files(params, base)
    params_table = diff_table(params, "param").drop(columns="change")
    return Comparison(
        base, base_commit, head_commit, diff_table(metrics, "metric"), params_table, absent
    )


def number(value: object, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"`{value}`"
    sign = "+" if signed else ""
    if isinstance(value, int):
        return f"{value:{sign}d}"
    if value and abs(value) < 1e-3:  # a numerical check's error: its magnitude is the point
        return f"{value:{sign}.3g}"
    return f"{value:{sign},.1f}" if abs(value) >= 100 else f"{value:{sign}.4f}"


def verdict(change: object, higher: bool | None) -> str:
    if higher is None or not isinstance(change, int | float) or change == 0:
        return ""
    return " better" if (change > 0) == higher else " **worse**"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def markdown_table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    """A pipe table; `align` is one letter per column: l(eft) or r(ight)."""
    rule = ["--:" if a == "r" else ":--" for a in align]
    # a class or param named with a pipe must not split its cell (GitHub: also inside code)
    return [
        f"| {' | '.join(str(cell).replace('|', chr(92) + '|') for cell in cells)} |"
        for cells in (header, rule, *rows)
    ]


def headline_rows(metrics: pd.DataFrame) -> list[list[str]]:
    rows = []
    for path, name, label in HEADLINE:
        found = metrics[(metrics["file"] == relative(path)) & (metrics["metric"] == name)]
        if found.empty:
            continue
        row = found.iloc[0]
        change = None if pd.isna(row["base"]) else row["change"]
        rows.append(
            [
                label,
                number(row["base"]),
                number(row["workspace"]),
                number(change, signed=True) + verdict(change, higher_is_better(name)),
            ]
        )
    return rows


def diff_rows(frame: pd.DataFrame, name: str, with_change: bool = True) -> list[list[str]]:
    return [
        [f"`{row['file']}`", f"`{row[name]}`", number(row["base"]), number(row["workspace"])]
        + ([number(row["change"], signed=True)] if with_change else [])
        for _, row in frame.iterrows()
    ]


def confusion_markdown(path: Path) -> list[str]:
    """The test confusion matrix (rows: true class, columns: predicted) as a Markdown table."""
    matrix = pd.read_csv(path, index_col=0, dtype=str)
    rows = [[f"**{label}**", *counts] for label, counts in matrix.iterrows()]
    header = ["true \\ predicted", *matrix.columns]
    return markdown_table(header, rows, "l" + "r" * matrix.shape[1])


def training_summary(path: Path) -> str:
    history = pd.read_csv(path)
    best = history.loc[history["val_loss"].idxmin()]
    return (
        f"{plural(len(history), 'epoch')}; lowest validation loss {best['val_loss']:.4f} at "
        f"epoch {int(best['epoch'])} (validation accuracy {best['val_accuracy']:.4f})."
    )


def run_link() -> str:
    """The CI run's page, where its artifact lies (GitHub Actions' own variables)."""
    server, repository, run_id = (
        os.environ.get(v) for v in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    if not (server and repository and run_id):
        return ""
    return f"{server}/{repository}/actions/runs/{run_id}"


def differs(row: pd.Series) -> bool:
    """A metric new, removed or changed, numbers or not (DVC gives a change only for two
    numbers)."""
    return pd.isna(row["base"]) or pd.isna(row["workspace"]) or row["base"] != row["workspace"]


def picture(index: int, embed: bool) -> str:
    path, title = PICTURES[index]
    if embed:
        return f"![{title}]({path.name})"
    return f"*{title}: `{path.name}` in the `{ARTIFACT}` artifact.*"


def metric_sections(changed: pd.DataFrame, timings: pd.DataFrame, base: str) -> list[str]:
    """The model metrics that differ (folded), then the machine's timings."""
    header = ["file", "metric", base, "this change", "change"]
    lines = ["", "## Model metrics that differ", ""]
    if len(changed):
        lines += [
            f"<details><summary>{plural(len(changed), 'metric')}</summary>",
            "",
            *markdown_table(header, diff_rows(changed, "metric"), "llrrr"),
            "",
            "</details>",
        ]
    else:
        lines.append(f"Every model metric equals `{base}`'s.")
    lines += ["", "## Timings (vary with the machine)", ""]
    if len(timings):
        lines += markdown_table(header, diff_rows(timings, "metric"), "llrrr")
    else:
        lines.append("None recorded.")
    return lines


def render(comparison: Comparison, root: Path, link: str = "", pictures: bool = True) -> str:
    """The report as Markdown; with `pictures`, it shows the pictures that lie beside it."""
    c = comparison
    metrics = c.metrics
    model = metrics[~metrics["metric"].map(is_timing)]
    changed = model[model.apply(differs, axis=1)] if len(model) else model
    timings = metrics[metrics["metric"].map(is_timing)]
    lines = [
        f"# Pipeline report: the workspace at `{c.head_commit[:8]}` against `{c.base}` "
        f"(`{c.base_commit[:8]}`)",
        "",
        f"`dvc metrics diff {c.base}` and `dvc params diff {c.base}` on the workspace after "
        f"`make run`: {plural(len(c.params), 'param')} and {plural(len(changed), 'model metric')}"
        " differ (machine timings aside).",
        "",
    ]
    if c.absent:
        lines += [f"Not in the workspace (its stage has not run): {', '.join(c.absent)}.", ""]
    lines += [
        "## Headline metrics",
        "",
        *markdown_table(
            ["metric", c.base, "this change", "change"], headline_rows(metrics), "lrrr"
        ),
        "",
        "## Params that differ",
        "",
    ]
    if len(c.params):
        header = ["file", "param", c.base, "this change"]
        lines += markdown_table(header, diff_rows(c.params, "param", False), "llrr")
    else:
        lines.append(f"No param differs from `{c.base}`.")
    lines += metric_sections(changed, timings, c.base)
    lines += [
        "",
        "## Confusion matrix (test)",
        "",
        picture(0, pictures),
        "",
        *confusion_markdown(root / relative(CONFUSION_CSV)),
        "",
        "## Training curves",
        "",
        picture(1, pictures),
        "",
        training_summary(root / relative(HISTORY_FILE)),
        "",
    ]
    if link:
        lines += [f"Pictures and tables: the `{ARTIFACT}` artifact of [this run]({link}).", ""]
    return "\n".join(lines)


def write_report(comparison: Comparison, root: Path, output: Path, link: str = "") -> Path:
    """reports/ci/: report.md, the two diffs as CSV, and the pictures it shows; atomically."""
    with staged_dir(output) as staging:
        (staging / REPORT_NAME).write_text(render(comparison, root, link), encoding="utf-8")
        comment = render(comparison, root, link, pictures=False)
        (staging / COMMENT_NAME).write_text(comment, encoding="utf-8")
        write_csv(comparison.metrics, staging / "metrics_diff.csv")
        write_csv(comparison.params, staging / "params_diff.csv")
        for path, _ in PICTURES:
            shutil.copy2(root / relative(path), staging / path.name)
    return output / REPORT_NAME


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="main", help="git revision to compare with")
    parser.add_argument("--output", type=Path, default=CI_REPORT_DIR)
    args = parser.parse_args(argv)
    comparison = compare(ROOT, args.base)
    written = write_report(comparison, ROOT, args.output.resolve(), run_link())
    print(written.read_text(encoding="utf-8"))
    shown = written.relative_to(ROOT) if written.is_relative_to(ROOT) else written
    print(f"report: written to {shown}")


if __name__ == "__main__":
    run_stage("report", main)
