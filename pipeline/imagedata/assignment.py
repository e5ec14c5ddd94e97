"""The split's assignment: a leakage-free, stable, stratified split of a raw folder.

Every file is hashed and fully decoded (in parallel). Files that are not usable images are
rejected with a reason; the same bytes under two classes are conflicting labels. Each class is
split on its own, by a seeded hash of each file's content, into sizes that meet the configured
fractions as closely as the class size allows; identical files always share a split. The split
remembers: when the folder changes, images already split keep their split and only new images
are placed (to fill the splits that are short), so adding images never moves another one.
Images already in the model's colour model are hard-linked; the others are converted to PNG.
"""

import hashlib
import logging
from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.common.files import link_or_copy, read_json, write_csv, write_json
from pipeline.common.log import PipelineError
from pipeline.common.parallel import parallel_map
from pipeline.contracts import Labels, write_labels
from pipeline.imagedata import manifest as mf
from pipeline.imagedata.images import (
    ImageFacts,
    inspect_image,
    is_ignored,
    list_raw,
    needs_conversion,
    resolve_channels,
    to_png,
)
from pipeline.imagedata.relabels import apply_relabels, carried_over
from pipeline.imagedata.similarity import (
    PLAIN,
    close_pairs,
    compare_size,
    crop_array,
    crop_pairs,
    group_ids,
    hash_array,
    pixel_correlations,
)
from pipeline.params import SplitParams
from pipeline.paths import SPLITS

log = logging.getLogger(__name__)

MIN_CLASS_SIZE = len(SPLITS)
MESSAGE_LINES = 50  # files listed in an error message before it says "and N more"


class SplitError(PipelineError, ValueError):
    """The raw folder cannot be split as configured."""


def split_sizes(count: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Images per split for a class of `count` distinct images.

    Largest-remainder rounding keeps every split within one image of its share; a class of
    at least three also gets at least one image in every split with a share (taken from the
    largest).
    """
    quotas = {name: count * fractions[name] for name in SPLITS}
    sizes = {name: int(quota) for name, quota in quotas.items()}
    by_remainder = sorted(SPLITS, key=lambda name: (sizes[name] - quotas[name], SPLITS.index(name)))
    for name in by_remainder[: count - sum(sizes.values())]:
        sizes[name] += 1
    if count >= MIN_CLASS_SIZE:
        for name in [name for name in SPLITS if fractions[name] > 0]:
            if sizes[name] == 0:
                sizes[max(SPLITS, key=lambda other: sizes[other])] -= 1
                sizes[name] += 1
    return sizes


def _rank(seed: int, digest: str) -> str:
    return hashlib.sha256(f"{seed}:{digest}".encode()).hexdigest()


def _units(rows: pd.DataFrame, seed: int) -> list[list[str]]:
    """The distinct contents of one class as units that go to one split together: each group
    of near duplicates (column `group`, "" for none) and each other content on its own.
    Groups come first, largest first, so the contents alone can even out the sizes after
    them; within a size, in seeded-hash order."""
    distinct = rows.drop_duplicates("sha256")
    group = distinct["group"] if "group" in distinct else pd.Series("", index=distinct.index)
    unit = group.where(group != "", distinct["sha256"])
    members = distinct["sha256"].groupby(unit.to_numpy()).agg(sorted)
    order = sorted(members.index, key=lambda u: (-len(members[u]), _rank(seed, u)))
    return [members[u] for u in order]


def split_assignments(
    contents: pd.DataFrame,
    fractions: Mapping[str, float],
    seed: int,
    previous: Mapping[tuple[str, str], str] | None = None,
    train_only: Iterable[str] = (),
) -> dict[tuple[str, str], str]:
    """The split of every distinct (label, sha256) in `contents`, stratified by label, with
    each group of near duplicates (`_units`) in one split.

    Contents found in `previous` keep their split (a new member of a group joins it there).
    The other units are taken in turn, each to the split furthest below its target size, so
    a fresh split hits the targets of `split_sizes` as exactly as the groups allow and a grown
    folder fills the gaps without moving anything.
    """
    previous = previous or {}
    train_only = set(train_only)
    assignment: dict[tuple[str, str], str] = {}
    for label, rows in contents.groupby("label", sort=True):
        units = [[(label, digest) for digest in unit] for unit in _units(rows, seed)]
        if label in train_only:
            assignment.update(dict.fromkeys((key for unit in units for key in unit), "train"))
            continue
        targets = split_sizes(sum(map(len, units)), fractions)
        counts = dict.fromkeys(SPLITS, 0)
        pending = []
        for unit in units:
            kept = [previous[key] for key in unit if key in previous]
            if not kept:
                pending.append(unit)
                continue
            for key in unit:
                assignment[key] = previous.get(key, kept[0])
                counts[assignment[key]] += 1
        for unit in pending:
            name = max(SPLITS, key=lambda s: (targets[s] - counts[s], -SPLITS.index(s)))
            assignment.update(dict.fromkeys(unit, name))
            counts[name] += len(unit)
    return assignment


def _inspect(raw_dir: Path, max_pixels: int, relative: str) -> ImageFacts:
    return inspect_image(raw_dir / relative, perceptual=True, max_pixels=max_pixels)


def _status(reason: str) -> str:
    if not reason:
        return mf.OK
    return mf.IGNORED if is_ignored(reason) else mf.REJECTED


def inspect_files(raw_dir: Path, listing: pd.DataFrame, max_pixels: int) -> pd.DataFrame:
    """One row per listed file with its facts, a status (ok, rejected, or ignored for debris)
    and the reason. No file declaring more than `max_pixels` is decoded."""
    readable = listing[listing["problem"].isna()]
    work = partial(_inspect, raw_dir, max_pixels)
    facts = dict(
        zip(
            readable.index,
            parallel_map(work, readable["path"].tolist(), "split: checking"),
            strict=True,
        )
    )
    rows = []
    for index, entry in listing.iterrows():
        fact = facts.get(index)
        listed_problem = entry["problem"] if pd.notna(entry["problem"]) else None
        reason = listed_problem or (fact.problem if fact else None) or ""
        details = fact.as_row() if fact else {}
        details.pop("problem", None)
        rows.append(
            {
                "raw_path": entry["path"],
                "label": entry["label"],
                "given_split": entry["given_split"],
                **details,
                "status": _status(reason),
                "reason": reason,
                "facts": fact,
            }
        )
    table = pd.DataFrame(rows)
    table["sha256"] = table.get("sha256", pd.Series(index=table.index, dtype=str)).fillna("")
    return table


def mark_conflicts(table: pd.DataFrame, policy: str) -> pd.DataFrame:
    """The same bytes under two or more classes: every copy excluded, or the stage stopped."""
    usable = table["status"] == mf.OK
    labels = table[usable].groupby("sha256")["label"].agg(lambda names: sorted(set(names)))
    conflicted = labels[labels.map(len) > 1]
    if conflicted.empty:
        return table
    rows = usable & table["sha256"].isin(conflicted.index)
    if policy == "error":
        listed = "\n".join(
            f"  {path} ({label})"
            for path, label in table.loc[rows, ["raw_path", "label"]].itertuples(index=False)
        )
        raise SplitError(
            f"{len(conflicted)} image(s) appear under more than one class (conflicting labels; "
            f"set split.conflicting_labels: exclude to leave them out):\n{listed}"
        )
    table = table.copy()
    table.loc[rows, "status"] = mf.CONFLICT
    table.loc[rows, "reason"] = [
        "same content under classes " + ", ".join(repr(n) for n in conflicted[digest])
        for digest in table.loc[rows, "sha256"]
    ]
    return table


def apply_small_class_policy(table: pd.DataFrame, policy: str) -> tuple[pd.DataFrame, set[str]]:
    """Classes with too few distinct images for every split: stop, keep in train, or drop.
    A class folder with no usable image at all (empty, every file broken or conflicting) is
    one of them, so no class vanishes unsaid."""
    usable = table["status"] == mf.OK
    classes = sorted(set(table["label"]) - {""})
    distinct = table[usable].groupby("label")["sha256"].nunique().reindex(classes, fill_value=0)
    small = distinct[distinct < MIN_CLASS_SIZE]
    if small.empty:
        return table, set()
    described = ", ".join(
        f"{label!r} ({count or 'no usable image'})" for label, count in small.items()
    )
    if policy == "error":
        raise SplitError(
            f"class(es) with fewer than {MIN_CLASS_SIZE} distinct images, too few for every "
            f"split: {described}. Add images, or set split.small_classes to train_only or drop"
        )
    log.warning(f"class(es) left out of some or all splits (split.small_classes: {policy}): "
                f"{described}; data/split/summary.csv lists them")  # fmt: skip
    status = mf.TRAIN_ONLY if policy == "train_only" else mf.DROPPED
    rows = usable & table["label"].isin(small.index)
    table = table.copy()
    table.loc[rows, "status"] = status
    table.loc[rows, "reason"] = [
        f"class has {small[label]} distinct image(s), fewer than {MIN_CLASS_SIZE} "
        f"(split.small_classes: {policy})"
        for label in table.loc[rows, "label"]
    ]
    return table, set(small.index) if status == mf.TRAIN_ONLY else set()


def check_rejections(table: pd.DataFrame, max_fraction: float) -> None:
    """Stop when more files are unusable than `split.max_rejected_fraction` allows (of the
    entries not merely listed: hidden files and the OS's small files are not counted)."""
    rejected = table[table["status"] == mf.REJECTED]
    counted = int((table["status"] != mf.IGNORED).sum())
    fraction = len(rejected) / max(1, counted)
    if fraction > max_fraction:
        lines = [f"  {r.raw_path}: {r.reason}" for r in rejected.itertuples()]
        if len(lines) > MESSAGE_LINES:
            lines[MESSAGE_LINES:] = [f"  ... and {len(lines) - MESSAGE_LINES} more"]
        listed = "\n".join(lines)
        raise SplitError(
            f"{len(rejected)} of {counted} files "
            f"({fraction:.1%}) are not usable images, "
            f"more than split.max_rejected_fraction = {max_fraction:.1%}:\n{listed}"
        )


def previous_assignments(
    split_dir: Path, seed: int, fractions: Mapping[str, float]
) -> dict[tuple[str, str], str]:
    """The last split's placements, if it was made with the same seed and fractions."""
    try:
        state = read_json(split_dir / mf.STATE_FILE)
        previous = mf.read_manifest(split_dir / "manifest.csv")
    except FileNotFoundError:
        return {}
    if state.get("seed") != seed or state.get("fractions") != dict(fractions):
        return {}
    placed = mf.in_splits(previous)
    return dict(
        zip(zip(placed["label"], placed["sha256"], strict=True), placed["split"], strict=True)
    )


def output_paths(table: pd.DataFrame) -> pd.Series:
    """Where each placed file goes inside data/split; converted files become `.png`.

    Names that would collide (also on case-insensitive file systems) get a content hash.
    """
    placed = table["split"] != ""
    paths = pd.Series("", index=table.index, dtype=object)
    for index, row in table[placed].iterrows():
        # inside the class folder (below the given split's folder, when there is one)
        inside = Path(*Path(row["raw_path"]).parts[2 if row["given_split"] else 1 :])
        if row["convert"]:
            inside = inside.with_suffix(".png")
        paths[index] = Path(row["split"], row["label"], inside).as_posix()
    clash = paths[placed].str.lower().duplicated(keep=False)
    for index in clash[clash].index:
        path = Path(paths[index])
        paths[index] = path.with_name(
            f"{path.stem}-{table.at[index, 'sha256'][:10]}{path.suffix}"
        ).as_posix()
    return paths


def _materialise(
    raw_dir: Path, target_dir: Path, channels: int, background: tuple[int, int, int], job: tuple
) -> str:
    raw_path, path, convert = job
    source, target = raw_dir / raw_path, target_dir / path
    if not convert:
        link_or_copy(source, target)
        return "linked"
    png, actions = to_png(source.read_bytes(), channels, background)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(png)
    return "converted: " + "; ".join(actions)


def class_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Files per class per split, how many were left out and why, and the class's fate
    (files beside the class folders belong to no class and are left out of it)."""
    table = table[table["label"] != ""]
    placed = table[table["split"] != ""]
    counts = pd.crosstab(placed["label"], placed["split"]).reindex(columns=list(SPLITS))
    outcome = pd.crosstab(table["label"], table["status"]).reindex(columns=list(mf.STATUSES))
    left_out = outcome[[mf.REJECTED, mf.CONFLICT, mf.EXCLUDED]]
    summary = counts.reindex(outcome.index).join(left_out)
    summary = summary.fillna(0).astype(int)
    status = pd.Series(mf.OK, index=summary.index)
    status[summary[list(SPLITS)].sum(axis=1) == 0] = "no usable image"
    for policy in (mf.TRAIN_ONLY, mf.DROPPED):
        status[outcome[policy].fillna(0) > 0] = policy
    summary["class_status"] = status
    return summary.rename_axis("class").reset_index()


def _candidates(part: pd.DataFrame, within: int) -> pd.DataFrame:
    """The near-duplicate candidates among one class's rows (`imagedata.similarity`): columns
    `first` and `second` (table indices) and `cropped`."""
    plain = hash_array(part["phash"])
    close = pd.DataFrame(close_pairs(plain, within), columns=["first", "second"])
    hashes = (plain, crop_array(part["phash_crops"]))
    crops = crop_pairs(hashes, hashes, within)
    crops = crops[crops["first"] != crops["second"]]
    both = pd.concat([close.assign(cropped=PLAIN), crops], ignore_index=True)
    index = part.index.to_numpy()
    return both.assign(first=index[both["first"]], second=index[both["second"]])[
        ["first", "second", "cropped"]
    ]


def near_duplicate_groups(
    raw_dir: Path, table: pd.DataFrame, among: pd.Series, cfg: SplitParams
) -> pd.Series:
    """For every row in `among`, the group of near duplicates within its class it belongs to
    (`imagedata.similarity`): named by the group's smallest sha256, "" for a content with no
    near duplicate. Identical files need no group: they share a sha256."""
    group = pd.Series("", index=table.index, dtype=object)
    rows = table[among].drop_duplicates(["label", "sha256"])
    found = [_candidates(part, cfg.near_duplicate_distance) for _, part in rows.groupby("label")]
    candidates = pd.concat(found, ignore_index=True) if found else pd.DataFrame()
    if not len(candidates):
        return group
    paths = table["raw_path"]
    size = compare_size(rows[["width", "height"]].min(axis=1))
    pairs = list(zip(paths.loc[candidates["first"]], paths.loc[candidates["second"]], strict=True))
    correlations = pixel_correlations(raw_dir, pairs, size, candidates["cropped"].to_numpy())
    confirmed = candidates.loc[
        correlations >= cfg.near_duplicate_correlation, ["first", "second"]
    ].to_numpy()
    position = pd.Series(np.arange(len(rows)), index=rows.index)
    component = pd.Series(
        group_ids(len(rows), position[confirmed.ravel()].to_numpy().reshape(-1, 2)),
        index=rows.index,
    )
    named = rows["sha256"].groupby(component).transform("min")
    named = named.where(component.map(component.value_counts()) > 1, "")
    by_content = dict(zip(zip(rows["label"], rows["sha256"], strict=True), named, strict=True))
    keys = zip(table.loc[among, "label"], table.loc[among, "sha256"], strict=True)
    group[among] = [by_content[key] for key in keys]
    return group


def _looked_up(assignment: Mapping[tuple[str, str], str], rows: pd.DataFrame) -> list[str]:
    return [assignment[key] for key in zip(rows["label"], rows["sha256"], strict=True)]


def ours_to_split(table: pd.DataFrame, placed: pd.Series) -> pd.Series:
    """The placed rows whose split this stage chooses: all of them, unless the source gave
    its splits; then the given train images when no validation split was given (it is
    carved from them), else none."""
    given = table["given_split"]
    if not given.ne("").any():
        return placed
    return placed & (given == "train") & ("validation" not in set(given))


def assign_splits(
    table: pd.DataFrame,
    placed: pd.Series,
    cfg: SplitParams,
    seed: int,
    previous: Mapping[tuple[str, str], str],
    train_only: set[str],
) -> pd.Series:
    """Each row's split ("" when not placed). Given splits are kept as they are; when no
    validation split is given, `split.validation` of the given train images is carved from
    it (stratified, by content hash, stable as a split of our own)."""
    split = pd.Series("", index=table.index, dtype=object)
    split[placed] = table.loc[placed, "given_split"]
    ours = ours_to_split(table, placed)
    if not ours.any():
        return split
    fractions, kept = cfg.fractions, previous
    if table["given_split"].ne("").any():
        fractions = {"train": 1 - cfg.validation, "validation": cfg.validation, "test": 0.0}
        kept = {key: name for key, name in previous.items() if name != "test"}
    assignment = split_assignments(table[ours], fractions, seed, kept, train_only)
    split[ours] = _looked_up(assignment, table[ours])
    return split


def placed_channels(table: pd.DataFrame, channels: int | str) -> int:
    """`base.channels` resolved (`resolve_channels`) for the images the split places."""
    placed = table["status"].isin([mf.OK, mf.TRAIN_ONLY])
    return resolve_channels(channels, table.loc[placed, "mode"])


def with_skipped(listing: pd.DataFrame, skipped: pd.DataFrame | None) -> pd.DataFrame:
    """`listing` of data/raw and the entries ingest listed but did not copy (`skipped`: rows
    of ingest's listing with a problem and no file in data/raw), so that every entry of the
    source is accounted for."""
    if skipped is None or skipped.empty:
        return listing
    skipped = skipped[~skipped["path"].isin(set(listing["path"]))]
    return pd.concat([listing, skipped.reindex(columns=listing.columns)], ignore_index=True)


def build_split(
    raw_dir: Path,
    cfg: SplitParams,
    seed: int,
    channels: int | str,
    previous: Mapping,
    skipped: pd.DataFrame | None = None,
    relabels: pd.DataFrame | None = None,
    relabels_source: str = "relabels.csv",
) -> pd.DataFrame:
    """Every raw file with its status, reason, facts and (when placed) split and output path;
    `skipped`: what ingest did not copy (`with_skipped`); `relabels`: label fixes
    (`imagedata.relabels`), applied before anything is grouped or placed."""
    listing = with_skipped(list_raw(raw_dir), skipped)
    if listing.empty:
        raise SplitError(f"{raw_dir} holds no class folder with files in it")
    table = inspect_files(raw_dir, listing, cfg.max_image_pixels)
    if relabels is None:
        relabels = pd.DataFrame(columns=["path", "label", "reason"])
    table = apply_relabels(table, relabels, relabels_source)
    previous = carried_over(previous, table)
    table = mark_conflicts(table, cfg.conflicting_labels)
    table, train_only = apply_small_class_policy(table, cfg.small_classes)
    check_rejections(table, cfg.max_rejected_fraction)
    placed = table["status"].isin([mf.OK, mf.TRAIN_ONLY])
    if not placed.any():
        raise SplitError(f"no usable image in {raw_dir}")
    channels = placed_channels(table, channels)
    table["convert"] = [
        placed[i] and needs_conversion(fact, channels) for i, fact in table.pop("facts").items()
    ]
    table["group"] = near_duplicate_groups(raw_dir, table, ours_to_split(table, placed), cfg)
    table["split"] = assign_splits(table, placed, cfg, seed, previous, train_only)
    table["path"] = output_paths(table)
    table["action"] = ""
    return table


def write_split(
    table: pd.DataFrame,
    raw_dir: Path,
    target: Path,
    channels: int,
    cfg: SplitParams,
    seed: int,
    relabels: dict | None = None,
) -> None:
    """Link or convert every placed file into `target`, then write the reports beside them."""
    placed = table["split"] != ""
    jobs = list(
        table.loc[placed, ["raw_path", "path", "convert"]].itertuples(index=False, name=None)
    )
    work = partial(_materialise, raw_dir, target, channels, tuple(cfg.background))
    table.loc[placed, "action"] = parallel_map(work, jobs, "split: writing")
    for column in ("width", "height", "bytes"):
        table[column] = table[column].astype("Int64") if column in table else pd.NA
    mf.write_manifest(table, target / "manifest.csv")
    classes = sorted(table.loc[placed, "label"].unique())
    labels = Labels(classes, tuple(cfg.background), cfg.max_image_pixels)
    write_labels(target / "labels.json", labels)
    write_csv(class_summary(table), target / "summary.csv")
    left_out = table[~placed]
    write_csv(left_out[["raw_path", "label", "status", "reason"]], target / "rejected.csv")
    write_json(
        target / mf.STATE_FILE,
        {
            "seed": seed,
            "channels": channels,
            "fractions": cfg.fractions,
            "files": len(table),
            "placed": int(placed.sum()),
            "left_out": table.loc[~placed, "status"].value_counts().to_dict(),
            "classes": len(classes),
            "near_duplicate_groups": int(table.loc[placed, "group"].replace("", pd.NA).nunique()),
            "in_near_duplicate_groups": int(table.loc[placed, "group"].ne("").sum()),
            "given_splits": sorted(set(table["given_split"]) - {""}, key=SPLITS.index),
            # the label fixes applied (imagedata.relabels.summary): their file's SHA-256
            "relabels": relabels or {},
        },
    )
