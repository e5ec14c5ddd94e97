"""Stage `split`: a seeded, stratified split of `data/raw` into train/validation/test folders.

Each class is split on its own so that every split keeps the class proportions. The order inside
a class comes from a seeded hash of each file's content, so identical files always share a split
and the result does not depend on file names or listing order.
"""

import hashlib
from pathlib import Path

import pandas as pd

from pipeline.files import link_or_copy, staged_dir, write_json
from pipeline.images import image_problem, list_images
from pipeline.params import load_params
from pipeline.paths import RAW_DIR, ROOT, SPLIT_DIR, SPLITS

MIN_CLASS_SIZE = len(SPLITS)


class SplitError(ValueError):
    """The raw folder cannot be split as configured."""


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def split_sizes(count: int, validation: float, test: float) -> dict[str, int]:
    """Images per split for a class of `count`: at least one in each, the rest to train."""
    n_test = max(1, round(count * test))
    n_validation = max(1, round(count * validation))
    return {"train": count - n_test - n_validation, "validation": n_validation, "test": n_test}


def split_assignments(
    listing: pd.DataFrame, validation: float, test: float, seed: int
) -> pd.Series:
    """Split name for each row of `listing` (columns `label`, `sha256`), stratified by label.

    Rows with the same content hash in a class count once and always land in the same split.
    """
    assignment = pd.Series(index=listing.index, dtype="object")
    for label, rows in listing.groupby("label", sort=True):
        digests = sorted(
            rows["sha256"].unique(),
            key=lambda digest: hashlib.sha256(f"{seed}:{digest}".encode()).hexdigest(),
        )
        if len(digests) < MIN_CLASS_SIZE:
            raise SplitError(
                f"class {label!r} has {len(digests)} distinct image(s); at least "
                f"{MIN_CLASS_SIZE} are needed to give every split one"
            )
        sizes = split_sizes(len(digests), validation, test)
        order = ["test"] * sizes["test"] + ["validation"] * sizes["validation"]
        order += ["train"] * sizes["train"]
        split_of = dict(zip(digests, order, strict=True))
        assignment[rows.index] = rows["sha256"].map(split_of)
    return assignment


def build_manifest(raw_dir: Path, validation: float, test: float, seed: int) -> pd.DataFrame:
    """Every raw image with its label, content hash, split and path inside the split folder."""
    listing = list_images(raw_dir)
    if listing.empty:
        raise SplitError(f"{raw_dir} holds no class folder with images")
    problems = {p: image_problem(raw_dir / p) for p in listing["path"]}
    bad = {path: why for path, why in problems.items() if why}
    if bad:
        details = "\n".join(f"  {path}: {why}" for path, why in sorted(bad.items()))
        raise SplitError(f"{len(bad)} file(s) in {raw_dir} are not usable images:\n{details}")
    listing["sha256"] = [file_digest(raw_dir / p) for p in listing["path"]]
    listing["split"] = split_assignments(listing, validation, test, seed)
    manifest = listing.rename(columns={"path": "raw_path"})
    manifest["path"] = manifest["split"] + "/" + manifest["raw_path"]
    return manifest[["path", "label", "split", "raw_path", "sha256"]]


def main() -> None:
    params = load_params()
    manifest = build_manifest(RAW_DIR, params.split.validation, params.split.test, params.base.seed)
    classes = sorted(manifest["label"].unique())
    with staged_dir(SPLIT_DIR) as staging:
        for row in manifest.itertuples():
            link_or_copy(RAW_DIR / row.raw_path, staging / row.path)
        manifest.to_csv(staging / "manifest.csv", index=False)
        write_json(staging / "labels.json", {"classes": classes})
    counts = manifest.groupby("split").size().reindex(SPLITS)
    print(
        f"split: {len(manifest)} images, {len(classes)} classes -> "
        + ", ".join(f"{split} {counts[split]}" for split in SPLITS)
        + f" in {SPLIT_DIR.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    main()
