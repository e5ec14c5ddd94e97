"""The gate's checks: facts about every image in the split (decoded, perceptually hashed, in
parallel), the tables derived from the manifest, the raw folder and those facts, the
great-expectations suites they must meet, and the message that names what failed.
"""

import os

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no telemetry: users run offline

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import great_expectations as gx
import great_expectations.expectations as gxe
import numpy as np
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig
from PIL import Image

from pipeline.common.log import PipelineError
from pipeline.common.native import CUDA_INIT_FAILED, native_stderr
from pipeline.common.parallel import parallel_map
from pipeline.imagedata import manifest as mf
from pipeline.imagedata.images import Rules, file_problem, inspect_image, seen_grey, stored_size
from pipeline.imagedata.similarity import (
    FIRST_CROPPED,
    PLAIN,
    SECOND_CROPPED,
    compare_sizes,
    confirmed,
    crop_array,
    crop_pairs,
    hash_array,
    pixel_correlations,
    shown,
)
from pipeline.params import SplitParams, ValidateParams
from pipeline.paths import SPLITS


class ValidationFailed(PipelineError):
    """One or more expectations failed; the message names each, with offenders."""


EXAMPLES = 20  # offending rows kept per expectation in validation.json
CROPPED_NAMES = {PLAIN: "", FIRST_CROPPED: "held-out", SECOND_CROPPED: "training"}


@dataclass(frozen=True)
class Check:
    """One table to validate, the columns that identify an offending row, and its suite."""

    frame: pd.DataFrame
    key: list[str]
    expectations: list[gxe.Expectation]


# ---- facts about the images in the split -----------------------------------------------------


def _image_facts(split_dir: Path, rules: Rules, path: str) -> dict:
    """One file of the split judged by the rule the split decided by (`images.file_problem`),
    so that a file it would have rejected is refused here with the same reason."""
    facts = inspect_image(split_dir / path, perceptual=True, rules=rules)
    problem = file_problem(facts, rules)
    if facts.problem:
        return {"path": path, "problem": problem, "error": problem}
    width, height = facts.width, facts.height
    return {
        "path": path,
        "problem": problem,
        "channels": Image.getmodebands(facts.mode),
        "width": width,
        "height": height,
        "oversized": stored_size(width, height, rules.max_side) != (width, height),
        "phash": facts.phash,
        "phash_crops": facts.phash_crops,
    }


def image_facts(split_dir: Path, paths: list[str], channels: int, rules: Rules) -> pd.DataFrame:
    """Judge every image of the split as the split judged the raw files (`_image_facts`):
    its problem if any, channels, size, whether it is larger than the split stores images,
    its perceptual hashes; and `decodes`: whether the training decoder itself reads it at
    the split's `channels` (a file it refuses would otherwise fail inside training, naming no
    file)."""
    rows = parallel_map(partial(_image_facts, split_dir, rules), paths, "validate: decoding")
    columns = ["path", "problem", "decodes", "channels", "width", "height", "oversized"]
    columns += ["phash", "phash_crops", "error"]
    facts = pd.DataFrame(rows).reindex(columns=columns)
    facts["oversized"] = facts["oversized"].astype("boolean")
    # TensorFlow only now, after the worker processes are gone: a fork of a process holding
    # it copies its threads' state and counts its memory once per worker
    from pipeline.imagedata.dataset import decoder_failures

    with native_stderr(CUDA_INIT_FAILED):  # no GPU is a note for train to make, not the gate
        refused = decoder_failures(split_dir, paths, channels)
    facts["decodes"] = ~facts["path"].isin(refused.keys())
    facts["error"] = facts["path"].map(refused).fillna(facts["error"])
    return facts


def hash_neighbours(
    placed: pd.DataFrame, hashes: pd.Series, within: int, crops: pd.Series | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """For every validation and test image, the training image with the closest perceptual
    hash (`hashes`: hex strings indexed by path) and their Hamming distance (0..64); and, from
    the same pass over the distances, every (held-out, training) pair `within` bits or closer:
    columns `held` and `train` (row positions in the two splits), `distance` and `cropped`
    (PLAIN). With `crops` (`crop_hashes` by path), the crop candidates too (`crop_pairs`:
    `cropped` FIRST_CROPPED where the held-out image is the crop)."""
    train = placed[placed["split"] == "train"]
    held_out = placed[placed["split"] != "train"]
    train_hashes = hash_array(hashes.reindex(train["path"]))
    held_hashes = hash_array(hashes.reindex(held_out["path"]))
    nearest = np.zeros(len(held_out), dtype=np.int64)
    distance = np.full(len(held_out), 65, dtype=np.int64)
    pairs = [pd.DataFrame(columns=["held", "train", "distance", "cropped"], dtype=np.int64)]
    # 512 x n_train distances at a time, XORed into one buffer (a fresh one each block cost
    # more in page faults than the arithmetic)
    scratch = np.empty((min(512, len(held_out)), len(train_hashes)), dtype=np.uint64)
    for start in range(0, len(held_out), 512):
        rows = held_hashes[start : start + 512]
        xored = np.bitwise_xor(rows[:, None], train_hashes[None, :], out=scratch[: len(rows)])
        block = np.bitwise_count(xored)
        if block.size:
            nearest[start : start + 512] = block.argmin(axis=1)
            distance[start : start + 512] = block.min(axis=1)
            held, close = np.nonzero(block <= within)
            found = {"held": held + start, "train": close, "distance": block[held, close]}
            pairs.append(pd.DataFrame(found).assign(cropped=PLAIN).astype(np.int64))
    if crops is not None:
        held_side = (held_hashes, crop_array(crops.reindex(held_out["path"])))
        train_side = (train_hashes, crop_array(crops.reindex(train["path"])))
        found = crop_pairs(held_side, train_side, within)
        pairs.append(found.rename(columns={"first": "held", "second": "train"}))
    near = pd.DataFrame(
        {
            "path": held_out["path"].to_numpy(),
            "split": held_out["split"].to_numpy(),
            "label": held_out["label"].to_numpy(),
            "nearest_train_path": train["path"].to_numpy()[nearest] if len(train) else "",
            "nearest_train_label": train["label"].to_numpy()[nearest] if len(train) else "",
            "distance": distance,
        }
    )
    return near, pd.concat(pairs, ignore_index=True)


def nearest_training_image(placed: pd.DataFrame, hashes: pd.Series) -> pd.DataFrame:
    """The first half of `hash_neighbours`: each held-out image's nearest training image."""
    return hash_neighbours(placed, hashes, within=-1)[0]


def confirm_near_duplicates(
    split_dir: Path, placed: pd.DataFrame, facts: pd.DataFrame, cfg: SplitParams
) -> pd.DataFrame:
    """`hash_neighbours`, with each held-out image's candidates (training images within
    `split.near_duplicate_distance` bits, or a crop of one or cropped from one) compared
    pixel by pixel as the split compared them (`similarity.pixel_correlations` through
    `images.seen_grey`). The best candidate is kept, with its `correlation` and which image
    of the pair is `cropped` ("held-out", "training" or ""); at or above
    `split.near_duplicate_correlation` the pair is a `confirmed` near duplicate, a `leak`
    unless both images are of a group the split spread over the splits on purpose
    (`split.inseparable_groups: split`: `spread` says so), and `other_class` when the two
    images are of different classes (the split excludes those as conflicting labels)."""
    by_path = facts.set_index("path")
    near, candidates = hash_neighbours(
        placed, by_path["phash"], cfg.near_duplicate_distance, by_path["phash_crops"]
    )
    near["correlation"] = np.nan
    near["cropped"] = ""
    near["spread"] = False
    if len(candidates):
        train = placed[placed["split"] == "train"]
        held_out = placed[placed["split"] != "train"]
        held_paths = near["path"].to_numpy()[candidates["held"]]
        train_paths = train["path"].to_numpy()[candidates["train"]]
        shorter = by_path[["width", "height"]].min(axis=1)
        sizes = compare_sizes(shorter[held_paths].to_numpy(), shorter[train_paths].to_numpy())
        pairs = list(zip(held_paths, train_paths, strict=True))
        view = partial(seen_grey, rules=Rules.of(cfg))
        correlations = pixel_correlations(split_dir, pairs, sizes, candidates["cropped"], view)
        candidates["correlation"] = correlations
        spread_groups = set(placed.loc[placed["reason"] == mf.SPREAD, "group"])
        held_group = held_out["group"].to_numpy()[candidates["held"]]
        candidates["spread"] = (held_group == train["group"].to_numpy()[candidates["train"]]) & (
            pd.Series(held_group).isin(spread_groups).to_numpy()
        )
        threshold = cfg.near_duplicate_correlation
        candidates["leak"] = confirmed(candidates["correlation"], threshold) & ~candidates["spread"]
        best = candidates.sort_values(
            ["leak", "correlation", "distance"], ascending=[True, True, False]
        )  # of each held-out image: a leak if there is one, else the closest
        best = best.groupby("held").tail(1)
        rows = best["held"].to_numpy()
        near.loc[rows, "nearest_train_path"] = train["path"].to_numpy()[best["train"]]
        near.loc[rows, "nearest_train_label"] = train["label"].to_numpy()[best["train"]]
        near.loc[rows, "distance"] = best["distance"].to_numpy()
        near.loc[rows, "correlation"] = best["correlation"].to_numpy()
        near.loc[rows, "cropped"] = best["cropped"].map(CROPPED_NAMES).to_numpy()
        near.loc[rows, "spread"] = best["spread"].to_numpy()
    near["confirmed"] = confirmed(near["correlation"].fillna(-1.0), cfg.near_duplicate_correlation)
    near["leak"] = near["confirmed"] & ~near["spread"]
    near["other_class"] = near["confirmed"] & (near["label"] != near["nearest_train_label"])
    near["correlation"] = shown(near["correlation"])
    return near


# ---- the tables and their expectations --------------------------------------------------------


def class_shares(
    placed: pd.DataFrame, fractions: dict[str, float], cfg: SplitParams
) -> pd.DataFrame:
    """Each class's images per split against its share, judged by the rule the split kept
    (`manifest.class_shares`). Classes the split kept in train only (`split.small_classes`,
    `split.inseparable_groups`) are expected nowhere else and are left out."""
    regular = placed[placed["status"] == mf.OK]
    return mf.class_shares(
        regular, fractions, cfg.class_fraction_tolerance, cfg.min_images_per_split
    )


def split_fraction_deviation(
    placed: pd.DataFrame, fractions: dict[str, float], tolerance: float
) -> pd.DataFrame:
    """Each split's share of all images against its configured share (of the classes split
    by the fractions: not those the split kept in train only). The allowance is `tolerance`
    plus the rounding each class may add (one image a class, as `manifest.class_shares`)."""
    regular = placed[placed["status"] == mf.OK]
    shares = regular["split"].value_counts(normalize=True).reindex(SPLITS, fill_value=0.0)
    table = pd.DataFrame({"split": SPLITS, "fraction": shares.to_numpy()})
    table["expected"] = table["split"].map(fractions)
    table["deviation"] = (table["fraction"] - table["expected"]).abs()
    table["allowed"] = tolerance + regular["label"].nunique() / max(1, len(regular))
    return table


def content_spread(placed: pd.DataFrame) -> pd.DataFrame:
    """For every distinct content: how many splits and classes it appears in."""
    grouped = placed.groupby("sha256")
    return pd.DataFrame(
        {
            "n_splits": grouped["split"].nunique(),
            "n_labels": grouped["label"].nunique(),
            "example_path": grouped["path"].first(),
        }
    ).reset_index()


def class_sizes(placed: pd.DataFrame) -> pd.DataFrame:
    return placed.groupby("label").size().rename("count").reset_index()


def raw_class_accounting(
    manifest: pd.DataFrame, raw: pd.DataFrame, classes: list[str]
) -> pd.DataFrame:
    """Every class folder in data/raw: in the labels file exactly when some of its images were
    placed, and otherwise every one of its files left out with a reason."""
    manifest = manifest.assign(label=mf.raw_labels(manifest))  # as data/raw has them
    placed = mf.in_splits(manifest).groupby("label").size()
    left_out = manifest[manifest["split"] == ""].groupby("label").size()
    table = pd.DataFrame({"label": sorted(set(raw["label"]) | set(classes))})
    table["raw_files"] = table["label"].map(raw.groupby("label").size()).fillna(0).astype(int)
    table["placed"] = table["label"].map(placed).fillna(0).astype(int)
    table["left_out"] = table["label"].map(left_out).fillna(0).astype(int)
    table["in_labels_file"] = table["label"].isin(classes)
    table["consistent"] = (table["in_labels_file"] == (table["placed"] > 0)) & (
        table["raw_files"] == table["placed"] + table["left_out"]
    )
    return table


def totals(manifest: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
    """The split's total against the raw folder: raw files = placed + left out (with reason)."""
    placed = int((manifest["split"] != "").sum())
    left_out = len(manifest) - placed
    return pd.DataFrame(
        [
            {
                "raw_files": len(raw),
                "manifest_rows": len(manifest),
                "placed": placed,
                "left_out": left_out,
                "unaccounted": len(raw) - placed - left_out,
            }
        ]
    )


@dataclass(frozen=True)
class Evidence:
    """What the gate checks: the split's manifest, ingest's listing of every raw file, the
    placed images' facts, the near-duplicate candidates and the classes."""

    manifest: pd.DataFrame
    raw: pd.DataFrame
    facts: pd.DataFrame
    near: pd.DataFrame
    classes: list[str]


def build_checks(
    evidence: Evidence, split: SplitParams, channels: int, cfg: ValidateParams, given: bool = False
) -> dict[str, Check]:
    """Every table to check, with the expectations it must meet: the split's, then the
    images' and the accounting of every raw file. Splits the source gave (`given`) are not
    held to the configured shares."""
    e = evidence
    checks = split_checks(e.manifest, e.near, e.classes, split, cfg) | data_checks(
        e.manifest, e.raw, e.facts, e.classes, channels, cfg
    )
    if given:
        del checks["split_fractions"], checks["class_split_fractions"]
    return checks


# tables whose failure a param turns into a report: the param, and the value that stops
REPORTABLE = {"class_balance": "class_imbalance"}
GIVEN_SPLIT_LEAKS = ("content", "near_duplicates")  # n_splits and distance: across splits


def judged(outcomes: list[dict], cfg: ValidateParams, given: bool) -> tuple[list[dict], list[dict]]:
    """The gate's verdict on its expectations' outcomes: those that fail it, and those unmet
    but only reported (`reported_only`)."""
    unmet = [o for o in outcomes if not o["success"]]
    reported = [o for o in unmet if reported_only(o, cfg, given)]
    return [o for o in unmet if o not in reported], reported


def reported_only(outcome: dict, cfg: ValidateParams, given: bool) -> bool:
    """Whether a failed expectation is reported rather than stopping the pipeline: class
    imbalance (`validate.class_imbalance: report`) and, in splits the source gave, content
    in two splits or near duplicates across them (`validate.given_split_leaks: report`)."""
    table, column = outcome["table"], outcome["kwargs"].get("column")
    if table in REPORTABLE:
        return getattr(cfg, REPORTABLE[table]) == "report"
    leak = table in GIVEN_SPLIT_LEAKS and column in ("n_splits", "leak")
    return given and leak and cfg.given_split_leaks == "report"


# Longer than 60 lines on purpose: one declarative table of the split's expectation suites,
# read top to bottom; cut in two it would only scatter the suite.
def split_checks(
    manifest: pd.DataFrame,
    near: pd.DataFrame,
    classes: list[str],
    split: SplitParams,
    cfg: ValidateParams,
) -> dict[str, Check]:
    """The split: every placed file valid and once, every class in every split at its
    share, no content in two splits or under two labels, no near-duplicate leakage."""
    placed = mf.in_splits(manifest)
    fractions = split.fractions
    shares = class_shares(placed, fractions, split)
    near_share_allowed = 1 - cfg.max_near_duplicate_share
    return {
        "manifest": Check(
            placed,
            ["path"],
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
        "class_split_counts": Check(
            shares[["label", "split", "count"]],
            ["label", "split"],
            [
                gxe.ExpectColumnValuesToBeBetween(
                    column="count", min_value=split.min_images_per_split
                )
            ],
        ),
        "split_fractions": Check(
            split_fraction_deviation(placed, fractions, cfg.fraction_tolerance),
            ["split"],
            [
                gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                    column_A="allowed", column_B="deviation", or_equal=True
                )
            ],
        ),
        "class_split_fractions": Check(
            shares,
            ["label", "split"],
            [gxe.ExpectColumnValuesToBeInSet(column="within", value_set=[True])],
        ),
        "content": Check(
            content_spread(placed),
            ["sha256", "example_path"],
            [
                gxe.ExpectColumnValuesToBeBetween(column="n_splits", max_value=1),
                gxe.ExpectColumnValuesToBeBetween(column="n_labels", max_value=1),
            ],
        ),
        "near_duplicates": Check(
            near,
            ["path", "nearest_train_path"],
            [
                gxe.ExpectColumnValuesToBeInSet(
                    column="leak", value_set=[False], mostly=near_share_allowed
                ),
                gxe.ExpectColumnValuesToBeInSet(column="other_class", value_set=[False]),
            ],
        ),
    }


def data_checks(
    manifest: pd.DataFrame,
    raw: pd.DataFrame,
    facts: pd.DataFrame,
    classes: list[str],
    channels: int,
    cfg: ValidateParams,
) -> dict[str, Check]:
    """The images (usable by the split's own rule, decoded by the training decoder, channels,
    no larger than the split stores them), class balance, and every raw file accounted for."""
    placed = mf.in_splits(manifest)
    sizes = class_sizes(placed)
    largest = int(sizes["count"].max()) if len(sizes) else 0
    return {
        "images": Check(
            facts,
            ["path"],
            [
                gxe.ExpectColumnValuesToBeNull(column="problem"),  # images.file_problem
                gxe.ExpectColumnValuesToBeInSet(column="decodes", value_set=[True]),
                gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=[channels]),
                gxe.ExpectColumnValuesToBeInSet(column="oversized", value_set=[False]),
            ],
        ),
        "class_balance": Check(
            sizes,
            ["label"],
            # largest / smallest <= max_class_imbalance, so the small classes are named
            [
                gxe.ExpectColumnValuesToBeBetween(
                    column="count", min_value=largest / cfg.max_class_imbalance
                )
            ],
        ),
        "raw_classes": Check(
            raw_class_accounting(manifest, raw, classes),
            ["label"],
            [gxe.ExpectColumnValuesToBeInSet(column="consistent", value_set=[True])],
        ),
        "totals": Check(
            totals(manifest, raw),
            ["raw_files", "placed", "left_out"],
            [gxe.ExpectColumnValuesToBeBetween(column="unaccounted", min_value=0, max_value=0)],
        ),
    }


# ---- running great-expectations ----------------------------------------------------------------


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def run_checks(checks: dict[str, Check], docs_dir: Path | None = None) -> list[dict]:
    """Validate every table with great-expectations; one summary row per expectation.

    With `docs_dir`, the results are also rendered as a Data Docs site there.
    """
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    actions = []
    if docs_dir is not None:
        context.add_data_docs_site(
            site_name="validate",
            site_config={
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
            },
        )
        actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["validate"])]
    source = context.data_sources.add_pandas("split")
    outcomes = []
    for name, check in checks.items():
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
        suite = context.suites.add(gx.ExpectationSuite(name=name, expectations=check.expectations))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=name,
                validation_definitions=[definition],
                actions=actions,
                result_format={
                    "result_format": "COMPLETE",
                    "unexpected_index_column_names": check.key,
                },
            )
        )
        result = checkpoint.run(batch_parameters={"dataframe": check.frame})
        for run in result.run_results.values():
            outcomes.extend(_summarise(name, item) for item in run.results)
    return sorted(outcomes, key=lambda o: (o["table"], o["expectation"], str(o["kwargs"])))


def _summarise(table: str, item) -> dict:
    config, detail = item.expectation_config, item.result or {}
    offending = detail.get("unexpected_index_list") or []
    if offending and not isinstance(offending[0], dict):  # table-level expectations
        offending = [{"value": value} for value in offending]
    return _jsonable(
        {
            "table": table,
            "expectation": config.type,
            "kwargs": {k: v for k, v in config.kwargs.items() if k != "batch_id"},
            "success": bool(item.success),
            "observed_value": detail.get("observed_value"),
            "element_count": detail.get("element_count"),
            "unexpected_count": detail.get("unexpected_count"),
            "unexpected_percent": detail.get("unexpected_percent"),
            "offending": offending[:EXAMPLES],
            "exception": (item.exception_info or {}).get("exception_message"),
        }
    )


def failure_message(failed: list[dict], total: int, report: Path, verb: str = "failed") -> str:
    """Every failed expectation with what was observed and which classes or files are at fault."""
    lines = [f"{len(failed)} of {total} expectations {verb} (details in {report}):"]
    for outcome in failed:
        kwargs = {k: v for k, v in outcome["kwargs"].items() if k != "column"}
        column = outcome["kwargs"].get("column", "")
        observed = outcome["observed_value"]
        if outcome["unexpected_count"] is not None:
            observed = f"{outcome['unexpected_count']} of {outcome['element_count']} rows outside"
        lines.append(
            f"  {outcome['table']}.{column}: {outcome['expectation']} {kwargs} -> {observed}"
        )
        for offender in outcome["offending"][:5]:
            lines.append("      " + ", ".join(f"{k}={v}" for k, v in offender.items()))
        if outcome["exception"]:
            lines.append(f"      error: {outcome['exception']}")
    return "\n".join(lines)
