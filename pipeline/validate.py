"""Stage `validate`: a great-expectations gate between the split and training.

The split manifest and tables derived from it are checked against an expectation suite. Any
failed expectation makes the stage exit non-zero, so `dvc repro` stops before training.
"""

import os
import sys

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no telemetry: users run offline

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig

from pipeline import manifest as mf
from pipeline.files import read_json, write_json
from pipeline.params import load_params
from pipeline.paths import LABELS_FILE, ROOT, SPLIT_MANIFEST, SPLITS, VALIDATION_FILE


def class_split_counts(manifest: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Images per (class, split), with a zero row for every pair that has none.

    Classes that the split kept in train only, by the `split.small_classes` policy, are
    expected nowhere else and are left out of this table.
    """
    train_only = set(manifest.loc[manifest["status"] == mf.TRAIN_ONLY, "label"])
    classes = [name for name in classes if name not in train_only]
    counts = manifest.groupby(["label", "split"]).size()
    full = pd.MultiIndex.from_product([classes, SPLITS], names=["label", "split"])
    return counts.reindex(full, fill_value=0).rename("count").reset_index()


def split_fraction_deviation(manifest: pd.DataFrame, fractions: dict[str, float]) -> pd.DataFrame:
    """Each split's share of all images against its configured share."""
    shares = manifest["split"].value_counts(normalize=True).reindex(SPLITS, fill_value=0.0)
    table = pd.DataFrame({"split": SPLITS, "fraction": shares.to_numpy()})
    table["expected"] = table["split"].map(fractions)
    table["deviation"] = (table["fraction"] - table["expected"]).abs()
    return table


def splits_per_content(manifest: pd.DataFrame) -> pd.DataFrame:
    """For every distinct file content, how many splits it appears in (leakage when > 1)."""
    return manifest.groupby("sha256")["split"].nunique().rename("n_splits").reset_index()


def expectation_tables(
    manifest: pd.DataFrame,
    classes: list[str],
    fractions: dict[str, float],
    min_images: int,
    tolerance: float,
) -> dict[str, tuple[pd.DataFrame, list[gxe.Expectation]]]:
    """The tables to check, each with the expectations it must meet."""
    return {
        "manifest": (
            manifest,
            [
                *(
                    gxe.ExpectColumnValuesToNotBeNull(column=c)
                    for c in ("path", "label", "split", "raw_path", "sha256")
                ),
                gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS)),
                gxe.ExpectColumnValuesToBeInSet(column="label", value_set=classes),
                gxe.ExpectColumnDistinctValuesToEqualSet(column="label", value_set=classes),
                gxe.ExpectColumnValuesToBeUnique(column="raw_path"),
                gxe.ExpectColumnValuesToBeUnique(column="path"),
            ],
        ),
        "class_split_counts": (
            class_split_counts(manifest, classes),
            [gxe.ExpectColumnValuesToBeBetween(column="count", min_value=min_images)],
        ),
        "split_fractions": (
            split_fraction_deviation(manifest, fractions),
            [gxe.ExpectColumnValuesToBeBetween(column="deviation", max_value=tolerance)],
        ),
        "content_leakage": (
            splits_per_content(manifest),
            [gxe.ExpectColumnValuesToBeBetween(column="n_splits", max_value=1)],
        ),
    }


def run_suites(tables: dict[str, tuple[pd.DataFrame, list[gxe.Expectation]]]) -> list[dict]:
    """Validate every table with great-expectations; one summary row per expectation."""
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("split")
    outcomes = []
    for name, (frame, expectations) in tables.items():
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=expectations))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )
        result = definition.run(batch_parameters={"dataframe": frame})
        for item in result.results:
            config = item.expectation_config
            detail = item.result or {}
            outcomes.append(
                {
                    "table": name,
                    "expectation": config.type,
                    "kwargs": {k: v for k, v in config.kwargs.items() if k != "batch_id"},
                    "success": bool(item.success),
                    "observed_value": detail.get("observed_value"),
                    "unexpected_count": detail.get("unexpected_count"),
                    "unexpected_examples": detail.get("partial_unexpected_list"),
                    "exception": (item.exception_info or {}).get("exception_message"),
                }
            )
    return sorted(outcomes, key=lambda o: (o["table"], o["expectation"], str(o["kwargs"])))


def main() -> None:
    params = load_params()
    manifest = mf.in_splits(mf.read_manifest(SPLIT_MANIFEST))
    classes = read_json(LABELS_FILE)["classes"]
    tables = expectation_tables(
        manifest,
        classes,
        params.split.fractions,
        params.validate_.min_images_per_split,
        params.validate_.fraction_tolerance,
    )
    outcomes = run_suites(tables)
    failed = [o for o in outcomes if not o["success"]]
    write_json(
        VALIDATION_FILE,
        {
            "success": not failed,
            "evaluated": len(outcomes),
            "failed": len(failed),
            "results": outcomes,
        },
    )
    report = VALIDATION_FILE.relative_to(ROOT)
    if failed:
        lines = [
            f"  {o['table']}: {o['expectation']} {o['kwargs']} -> "
            f"unexpected {o['unexpected_examples'] or o['observed_value'] or o['exception']}"
            for o in failed
        ]
        sys.exit(
            f"validate: {len(failed)} of {len(outcomes)} expectations failed "
            f"(details in {report}):\n" + "\n".join(lines)
        )
    print(f"validate: all {len(outcomes)} expectations met -> {report}")


if __name__ == "__main__":
    main()
