"""The split's assignment: a leakage-free, stable, stratified split of a raw folder.

Every file is hashed and fully decoded (in parallel). Files that are not usable images are
rejected with their reason (`images.file_problem`, the rule the gate verifies with); the same
picture under two classes, as the same bytes or as near duplicates, is a conflicting label.
Each class is split on its own, by a seeded hash of each file's content, into sizes that meet
the configured fractions as closely as the class size allows; identical files and each group of
near duplicates always share a split, and a class whose groups keep it from its shares
(`manifest.class_shares`) gets the `split.inseparable_groups` policy. The split remembers: when
the folder changes, images already split keep their split and only new images are placed (to
fill the splits that are short), so adding images never moves another one. Images already in
the model's colour model and size are hard-linked; the others are converted to PNG.
"""

import hashlib
import logging
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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
    Rules,
    file_problem,
    inspect_image,
    is_ignored,
    list_raw,
    resolve_channels,
    seen_grey,
    stored_file,
    stored_size,
    stored_suffix,
)
from pipeline.imagedata.relabels import apply_relabels, carried_over
from pipeline.imagedata.similarity import (
    PLAIN,
    close_pairs,
    compare_sizes,
    confirmed,
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


def _units(rows: pd.DataFrame, seed: int, spread: Iterable[str] = ()) -> list[list[str]]:
    """The distinct contents of one class as units that go to one split together: each group
    of near duplicates (column `group`, "" for none) and each other content on its own, as
    are the members of the groups in `spread`. Groups come first, largest first, so the
    contents alone can even out the sizes after them; within a size, in seeded-hash order."""
    distinct = rows.drop_duplicates("sha256")
    group = distinct["group"] if "group" in distinct else pd.Series("", index=distinct.index)
    alone = (group == "") | group.isin(set(spread))
    unit = group.where(~alone, distinct["sha256"])
    members = distinct["sha256"].groupby(unit.to_numpy()).agg(sorted)
    order = sorted(members.index, key=lambda u: (-len(members[u]), _rank(seed, u)))
    return [members[u] for u in order]


def split_assignments(
    contents: pd.DataFrame,
    fractions: Mapping[str, float],
    seed: int,
    previous: Mapping[tuple[str, str], str] | None = None,
    train_only: Iterable[str] = (),
    spread: Iterable[str] = (),
) -> dict[tuple[str, str], str]:
    """The split of every distinct (label, sha256) in `contents`, stratified by label, with
    each group of near duplicates (`_units`) in one split.

    Contents found in `previous` keep their split (a new member of a group joins it there;
    a group whose members were placed apart joins the split most of them are in).
    The other units are taken in turn, each to the split furthest below its target size, so
    a fresh split hits the targets of `split_sizes` as exactly as the groups allow and a grown
    folder fills the gaps without moving anything.
    """
    previous = previous or {}
    train_only = set(train_only)
    assignment: dict[tuple[str, str], str] = {}
    for label, rows in contents.groupby("label", sort=True):
        units = [[(label, digest) for digest in unit] for unit in _units(rows, seed, spread)]
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
            # a group whose images were placed apart (spread by policy before, or joined
            # only now by a new image): together again, where most of them were
            apart = len(set(kept)) > 1
            together = max(SPLITS, key=lambda s: (kept.count(s), -SPLITS.index(s)))
            if apart:
                log.warning(
                    f"class {label!r}: {len(unit)} near duplicates placed apart by an "
                    f"earlier split are kept together in {together}"
                )
            for key in unit:
                assignment[key] = together if apart else previous.get(key, kept[0])
                counts[assignment[key]] += 1
        for unit in pending:
            name = max(SPLITS, key=lambda s: (targets[s] - counts[s], -SPLITS.index(s)))
            assignment.update(dict.fromkeys(unit, name))
            counts[name] += len(unit)
    return assignment


def _inspect(raw_dir: Path, rules: Rules, working: Path | None, relative: str) -> ImageFacts:
    return inspect_image(raw_dir / relative, perceptual=True, rules=rules, staging=working)


def _status(reason: str) -> str:
    if not reason:
        return mf.OK
    return mf.IGNORED if is_ignored(reason) else mf.REJECTED


def inspect_files(
    raw_dir: Path, listing: pd.DataFrame, rules: Rules, working: Path | None = None
) -> pd.DataFrame:
    """One row per listed file with its facts, a status (ok, rejected, or ignored for debris)
    and the reason (`images.file_problem`). No file declaring more than `rules.max_pixels`
    is decoded. `working`: where each image that is not stored as it is gets its working-size
    copy (`images.stage`), so that writing the split decodes no raw file again."""
    readable = listing[listing["problem"].isna()]
    work = partial(_inspect, raw_dir, rules, working)
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
        reason = listed_problem or (file_problem(fact, rules) if fact else None) or ""
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


def _conflicts(table: pd.DataFrame, near: pd.DataFrame) -> dict[int, tuple[str, set[int]]]:
    """Every usable row whose picture is also under another class, with why and the rows it
    conflicts with: the same bytes (its sha256 under several labels), or a near duplicate
    (`near`: confirmed pairs of row indices) of an image of another class, named with its
    class."""
    usable = table["status"] == mf.OK
    label, path, digest = table["label"], table["raw_path"], table["sha256"]
    labels = table[usable].groupby("sha256")["label"].agg(lambda names: sorted(set(names)))
    conflicted = labels[labels.map(len) > 1]
    found: dict[int, tuple[str, set[int]]] = {}
    copies = table[usable & digest.isin(conflicted.index)]
    for sha, rows in copies.groupby("sha256"):
        why = "same content under classes " + ", ".join(repr(n) for n in conflicted[sha])
        for row in rows.index:
            found[row] = (why, set(rows.index[rows["label"] != label[row]]))
    across = near[label.loc[near["first"]].to_numpy() != label.loc[near["second"]].to_numpy()]
    for a, b in across[["first", "second"]].itertuples(index=False):
        for row, other in ((a, b), (b, a)):
            why = f"near duplicate of {path[other]} (class {label[other]!r})"
            why += f" under class {label[row]!r}"
            found.setdefault(row, (why, set()))[1].add(other)
    return found


def _kept_for_the_given_test(table: pd.DataFrame, found: dict) -> set[int]:
    """The conflicted rows of a given test split whose conflicts all lie outside it: the
    source's own test set stays whole (it is what results are compared on), and the copies
    in training are the ones left out."""
    given_test = set(table.index[table["given_split"] == "test"])
    return {
        row for row, (_, others) in found.items() if row in given_test and not (others & given_test)
    }


def mark_conflicts(
    table: pd.DataFrame, policy: str, near: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The same picture under two or more classes (the same bytes, or near duplicates:
    `near`, confirmed pairs of row indices): every copy of it excluded, or the stage stopped.
    Identical copies of a conflicted file share its fate; an image of a test split the
    source gave is kept when its conflicts all lie outside that split."""
    near = near if near is not None else pd.DataFrame(columns=["first", "second"], dtype=int)
    found = _conflicts(table, near)
    kept = _kept_for_the_given_test(table, found)
    found = {row: why for row, (why, _) in found.items() if row not in kept}
    if not found:
        return table
    digests = {table.at[i, "sha256"]: i for i in found}
    rows = (table["status"] == mf.OK) & table["sha256"].isin(digests) & ~table.index.isin(kept)
    reasons = [found.get(i) or found[digests[table.at[i, "sha256"]]] for i in table.index[rows]]
    if kept:
        log.info(
            f"{len(kept)} image(s) of the given test split conflict with images outside "
            "it: those are left out, the test split stays whole"
        )
    if policy == "error":
        lines = [
            f"  {path} ({label}): {reason}"
            for path, label, reason in zip(
                table.loc[rows, "raw_path"], table.loc[rows, "label"], reasons, strict=True
            )
        ]
        if len(lines) > MESSAGE_LINES:
            lines[MESSAGE_LINES:] = [f"  ... and {len(lines) - MESSAGE_LINES} more"]
        raise SplitError(
            f"{len(lines)} image(s) show a picture also filed under another class (conflicting "
            f"labels; set split.conflicting_labels: exclude to leave them out, or fix the "
            "labels in data/relabels.csv):\n" + "\n".join(lines)
        )
    table = table.copy()
    table.loc[rows, "status"] = mf.CONFLICT
    table.loc[rows, "reason"] = reasons
    return table


def apply_small_class_policy(table: pd.DataFrame, policy: str) -> tuple[pd.DataFrame, set[str]]:
    """Classes with too few distinct images for every split: stop, keep in train, or drop.
    A class folder with no usable image at all (empty, every file broken or conflicting) is
    one of them, so no class vanishes unsaid."""
    usable = table["status"] == mf.OK
    # a class folder refused as a whole (an unsafe name, a link) is a rejected entry, counted
    # as one: no image could ever be added to it
    refused = (table["status"] == mf.REJECTED) & (table["raw_path"] == table["label"])
    classes = sorted(
        set(table["label"])
        - {""}
        - (set(table.loc[refused, "label"]) - set(table.loc[~refused, "label"]))
    )
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
    log.warning(
        f"class(es) left out of some or all splits (split.small_classes: {policy}): "
        f"{described}; data/split/summary.csv lists them"
    )
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
    """The last split's placements, if it was made with the same seed and fractions (those of
    classes kept in train only by a policy are not remembered: they were never drawn)."""
    try:
        state = read_json(split_dir / mf.STATE_FILE)
        previous = mf.read_manifest(split_dir / "manifest.csv")
    except FileNotFoundError:
        return {}
    if state.get("seed") != seed or state.get("fractions") != dict(fractions):
        return {}
    placed = mf.in_splits(previous)
    placed = placed[placed["status"] == mf.OK]  # in train by a policy, not by the split's draw
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
            inside = inside.with_suffix(row["stored_suffix"])
        paths[index] = Path(row["split"], row["label"], inside).as_posix()
    clash = paths[placed].str.lower().duplicated(keep=False)
    for index in clash[clash].index:
        path = Path(paths[index])
        paths[index] = path.with_name(
            f"{path.stem}-{table.at[index, 'sha256'][:10]}{path.suffix}"
        ).as_posix()
    return paths


def _materialise(
    raw_dir: Path, target_dir: Path, channels: int, rules: Rules, working: Path | None, job: tuple
) -> str:
    raw_path, path, convert, staged, staged_actions = job
    source, target = raw_dir / raw_path, target_dir / path
    if not convert:
        link_or_copy(source, target)
        return "linked"
    copy = working / staged if working is not None and staged else None
    with warnings.catch_warnings():  # what Pillow warns of was logged when it was inspected
        warnings.simplefilter("ignore")
        data, actions = stored_file(source, channels, rules, copy)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    done = [staged_actions] if copy is not None and staged_actions else []
    return "converted: " + "; ".join(done + actions)


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
    """The near-duplicate candidates among `part`'s rows (`imagedata.similarity`): columns
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


def near_duplicate_pairs(
    raw_dir: Path, table: pd.DataFrame, among: pd.Series, cfg: SplitParams
) -> pd.DataFrame:
    """Every pair of near duplicates (`imagedata.similarity`) among the distinct (label,
    content) rows in `among`, in one class or across two: columns `first` and `second`, the
    table indices of one row of each. Each image is judged as the model will see it
    (`images.seen_grey`), which is how the gate judges the files the split writes."""
    rows = table[among].drop_duplicates(["label", "sha256"])
    candidates = _candidates(rows, cfg.near_duplicate_distance) if len(rows) > 1 else []
    if not len(candidates):
        return pd.DataFrame(columns=["first", "second"], dtype=np.int64)
    rules = Rules.of(cfg)
    shorter = pd.Series(
        [
            min(stored_size(w, h, rules.max_side))
            for w, h in zip(rows["width"], rows["height"], strict=True)
        ],
        index=rows.index,
    )
    sizes = compare_sizes(
        shorter[candidates["first"]].to_numpy(), shorter[candidates["second"]].to_numpy()
    )
    paths = table["raw_path"]
    pairs = list(zip(paths.loc[candidates["first"]], paths.loc[candidates["second"]], strict=True))
    view = partial(seen_grey, rules=rules)
    correlations = pixel_correlations(raw_dir, pairs, sizes, candidates["cropped"].to_numpy(), view)
    found = confirmed(correlations, cfg.near_duplicate_correlation)
    return candidates.loc[found, ["first", "second"]].drop_duplicates().reset_index(drop=True)


def near_duplicate_groups(table: pd.DataFrame, pairs: pd.DataFrame, among: pd.Series) -> pd.Series:
    """For every row in `among`, the group of near duplicates within its class it belongs to:
    the connected components of `pairs` (`near_duplicate_pairs`) of one class, so that no
    pair of near duplicates is ever split (the gate checks pairs); named by the group's
    smallest sha256, "" for a content with no near duplicate. Identical files need no group:
    they share a sha256."""
    group = pd.Series("", index=table.index, dtype=object)
    rows = table[among].drop_duplicates(["label", "sha256"])
    label = table["label"]
    inside = pairs[
        pairs["first"].isin(rows.index)
        & pairs["second"].isin(rows.index)
        & (label.reindex(pairs["first"]).to_numpy() == label.reindex(pairs["second"]).to_numpy())
    ]
    if not len(inside):
        return group
    position = pd.Series(np.arange(len(rows)), index=rows.index)
    linked = position[inside.to_numpy().ravel()].to_numpy().reshape(-1, 2)
    component = pd.Series(group_ids(len(rows), linked), index=rows.index)
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


def unmet_classes(
    rows: pd.DataFrame, splits: list[str], fractions: Mapping[str, float], cfg: SplitParams
) -> list[str]:
    """The classes of `rows` (placed in `splits`) whose split breaks the promise the gate
    checks (`manifest.class_shares`)."""
    placed = pd.DataFrame({"label": rows["label"].to_numpy(), "split": splits})
    tolerance, least = cfg.class_fraction_tolerance, cfg.min_images_per_split
    shares = mf.class_shares(placed, fractions, tolerance, least)
    return sorted(set(shares.loc[~shares["met"], "label"]))


def _described(rows: pd.DataFrame, label: str, splits: pd.Series) -> str:
    part = rows[rows["label"] == label]
    distinct = part.drop_duplicates("sha256")
    sizes = distinct.loc[distinct["group"] != "", "group"].value_counts()
    counts = splits[part.index].value_counts().reindex(list(SPLITS), fill_value=0)
    largest = (
        f"; the largest {sizes.iloc[0]} images, such as "
        + ", ".join(part.loc[part["group"] == sizes.index[0], "raw_path"].head(2))
        if len(sizes)
        else ""
    )
    return (
        f"{label!r}: {len(part)} images in {len(sizes)} near-duplicate group(s) and "
        f"{int((distinct['group'] == '').sum())} image(s) alike to no other{largest}; "
        "it would split " + ", ".join(f"{name} {counts[name]}" for name in SPLITS)
    )


def _check_memory(
    rows: pd.DataFrame,
    splits: pd.Series,
    fractions: Mapping[str, float],
    seed: int,
    spread: set[str],
    cfg: SplitParams,
) -> None:
    """Stop when what keeps a class from its shares is not its groups but the split's memory:
    its images keep their last split, and images were removed from some splits since (a fresh
    split of the class would meet its shares)."""
    fresh = split_assignments(rows, fractions, seed, spread=spread)
    met = set(rows["label"]) - set(unmet_classes(rows, _looked_up(fresh, rows), fractions, cfg))
    if met:
        described = "\n".join(f"  {_described(rows, label, splits)}" for label in sorted(met))
        raise SplitError(
            "class(es) whose images keep their last split, which no longer gives every split "
            f"its share (were images removed from a split?):\n{described}\nDelete data/split "
            "to re-split afresh (any image may then move)"
        )


def spread_assignments(
    rows: pd.DataFrame,
    fractions: Mapping[str, float],
    seed: int,
    kept: Mapping[tuple[str, str], str],
    train_only: set[str],
    cfg: SplitParams,
) -> tuple[dict[tuple[str, str], str], set[str], set[str]]:
    """`split_assignments`, and for each class whose near-duplicate groups keep it from its
    shares (`unmet_classes`) the `split.inseparable_groups` policy: stop naming the class
    and its groups, keep it in train only, or split its largest groups one at a time until
    it meets them. The assignment, the classes kept in train only and the groups split up."""
    spread: set[str] = set()
    train_only = set(train_only)
    grouped_in_train: set[str] = set()
    while True:
        assignment = split_assignments(rows, fractions, seed, kept, train_only, spread)
        splits = pd.Series(_looked_up(assignment, rows), index=rows.index)
        placed = ~rows["label"].isin(train_only)
        unmet = unmet_classes(rows[placed], splits[placed].tolist(), fractions, cfg)
        if not unmet:
            return assignment, grouped_in_train, spread
        _check_memory(rows[rows["label"].isin(unmet)], splits, fractions, seed, spread, cfg)
        described = "\n".join(f"  {_described(rows, label, splits)}" for label in unmet)
        policy = cfg.inseparable_groups
        breakable = {
            label: rows.loc[
                (rows["label"] == label) & (rows["group"] != "") & ~rows["group"].isin(spread),
                "group",
            ].value_counts()
            for label in unmet
        }
        if policy == "error" or (policy == "split" and not all(map(len, breakable.values()))):
            remedy = (
                "Set split.inseparable_groups to train_only (keep the class in train only) or "
                "split (split its largest groups: its held-out images then have near "
                "duplicates in train, which the gate reports), or add distinct images"
            )
            if policy == "split":  # every group split up, and still short
                remedy = "Add distinct images to these classes"
            raise SplitError(
                f"class(es) whose near duplicates cannot give every split its share "
                f"(split.class_fraction_tolerance {cfg.class_fraction_tolerance}, at least "
                f"{cfg.min_images_per_split} image(s) a split):\n{described}\n{remedy}"
            )
        log.warning(f"split.inseparable_groups: {policy}, applied to:\n{described}")
        if policy == "train_only":
            train_only |= set(unmet)
            grouped_in_train |= set(unmet)
        else:
            spread |= {sizes.index[0] for sizes in breakable.values()}


def assign_splits(
    table: pd.DataFrame,
    placed: pd.Series,
    cfg: SplitParams,
    seed: int,
    previous: Mapping[tuple[str, str], str],
    train_only: set[str],
) -> tuple[pd.Series, set[str], set[str]]:
    """Each row's split ("" when not placed), with the classes kept in train only and the
    groups split up by `split.inseparable_groups` (`spread_assignments`). Given splits are
    kept as they are; when no validation split is given, `split.validation` of the given
    train images is carved from it (stratified, by content hash, stable as a split of our
    own)."""
    split = pd.Series("", index=table.index, dtype=object)
    split[placed] = table.loc[placed, "given_split"]
    ours = ours_to_split(table, placed)
    if not ours.any():
        return split, set(), set()
    fractions, kept = cfg.fractions, previous
    if table["given_split"].ne("").any():
        fractions = {"train": 1 - cfg.validation, "validation": cfg.validation, "test": 0.0}
        kept = {key: name for key, name in previous.items() if name != "test"}
    assignment, grouped, spread = spread_assignments(
        table[ours], fractions, seed, kept, train_only, cfg
    )
    split[ours] = _looked_up(assignment, table[ours])
    return split, grouped, spread


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


@dataclass(frozen=True)
class SplitSetup:
    """What the split decides by: params.yaml's `split:` section, the seed (`base.seed`) and
    the colour model (`base.channels`: 1, 3, or auto in `build_split`, which resolves it)."""

    cfg: SplitParams
    seed: int
    channels: int | str


def build_split(
    raw_dir: Path,
    setup: SplitSetup,
    previous: Mapping,
    *,
    skipped: pd.DataFrame | None = None,
    relabels: pd.DataFrame | None = None,
    relabels_source: str = "relabels.csv",
    working: Path | None = None,
) -> pd.DataFrame:
    """Every raw file with its status, reason, facts and (when placed) split and output path;
    `skipped`: what ingest did not copy (`with_skipped`); `relabels`: label fixes
    (`imagedata.relabels`), applied before anything is grouped or placed; `working`: a
    folder for the images' working-size copies, which `write_split` then stores."""
    cfg, seed, channels = setup.cfg, setup.seed, setup.channels
    listing = with_skipped(list_raw(raw_dir), skipped)
    if listing.empty:
        raise SplitError(f"{raw_dir} holds no class folder with files in it")
    rules = Rules.of(cfg)
    table = inspect_files(raw_dir, listing, rules, working)
    log_notes(table)
    if relabels is None:
        relabels = pd.DataFrame(columns=["path", "label", "reason"])
    table = apply_relabels(table, relabels, relabels_source)
    previous = carried_over(previous, table)
    near = near_duplicate_pairs(raw_dir, table, table["status"] == mf.OK, cfg)
    table = mark_conflicts(table, cfg.conflicting_labels, near)
    table, train_only = apply_small_class_policy(table, cfg.small_classes)
    check_rejections(table, cfg.max_rejected_fraction)
    placed = table["status"].isin([mf.OK, mf.TRAIN_ONLY])
    if not placed.any():
        raise SplitError(f"no usable image in {raw_dir}")
    channels = placed_channels(table, channels)
    facts = table.pop("facts")
    suffixes = pd.Series(
        [stored_suffix(fact, channels, rules) if placed[i] else None for i, fact in facts.items()],
        index=table.index,
        dtype=object,
    )
    table["convert"] = suffixes.notna()
    table["stored_suffix"] = suffixes.fillna("")
    table["group"] = near_duplicate_groups(table, near, ours_to_split(table, placed))
    table["split"], grouped, spread = assign_splits(table, placed, cfg, seed, previous, train_only)
    in_train = placed & table["label"].isin(grouped)
    table.loc[in_train, "status"] = mf.TRAIN_ONLY
    table.loc[in_train, "reason"] = (
        "its near-duplicate groups cannot give every split its share "
        "(split.inseparable_groups: train_only)"
    )
    table.loc[placed & table["group"].isin(spread), "reason"] = mf.SPREAD
    table["path"] = output_paths(table)
    table["action"] = ""
    return table


def log_notes(table: pd.DataFrame) -> None:
    """What Pillow warned of while reading the raw files it did not reject (a rejected file's
    reason says all), with the files it concerns."""
    if "notes" not in table:
        return
    noted = table[(table["notes"].fillna("") != "") & (table["status"] != mf.REJECTED)]
    for note, rows in noted.groupby("notes"):
        more = f" and {len(rows) - 3} more" if len(rows) > 3 else ""
        shown = ", ".join(rows["raw_path"].head(3)) + more
        log.info(f"Pillow warned, reading {len(rows)} file(s) ({shown}): {note}")


def write_split(
    table: pd.DataFrame,
    raw_dir: Path,
    target: Path,
    setup: SplitSetup,
    relabels: dict | None = None,
    working: Path | None = None,
) -> None:
    """Link or convert every placed file into `target` (from its working-size copy in
    `working`, where `build_split` made one), then write the reports beside them."""
    cfg, seed, channels = setup.cfg, setup.seed, int(setup.channels)
    placed = table["split"] != ""
    for column in ("staged", "staged_actions"):
        if column not in table:
            table[column] = ""
    columns = ["raw_path", "path", "convert", "staged", "staged_actions"]
    jobs = list(table.loc[placed, columns].fillna("").itertuples(index=False, name=None))
    work = partial(_materialise, raw_dir, target, channels, Rules.of(cfg), working)
    table.loc[placed, "action"] = parallel_map(work, jobs, "split: writing")
    for column in ("width", "height", "bytes"):
        table[column] = table[column].astype("Int64") if column in table else pd.NA
    mf.write_manifest(table, target / "manifest.csv")
    classes = sorted(table.loc[placed, "label"].unique())
    labels = Labels(
        classes, tuple(cfg.background), cfg.max_image_pixels, cfg.max_image_size, cfg.jpeg_quality
    )
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
