"""The split stage against split-folders on the same folder of 20,000+ images (`make bench`),
then the validate stage on the resulting split.

Both run in this one process, alternately, on a warm page cache; the script prints each run,
the medians and their ratio. split-folders (`splitfolders.ratio`, copy mode) only copies files;
the split stage also hashes, fully decodes and checks every file, converts the ones that need
it, and hard-links the rest.
"""

import argparse
import contextlib
import io
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import splitfolders
from PIL import Image

from pipeline.contracts import read_labels
from pipeline.imagedata import checks as gate
from pipeline.imagedata import manifest as mf
from pipeline.imagedata.assignment import SplitSetup, build_split, write_split
from pipeline.imagedata.images import Rules, list_raw
from pipeline.imagedata.sources import digits_images
from pipeline.params import load_params
from pipeline.paths import ROOT
from pipeline.reporting.web_assets import localise_pages

BENCH_DIR = ROOT / ".bench"
SIZES = (8, 16, 24, 32, 48, 64)
FORMATS = {"PNG": ".png", "JPEG": ".jpg"}


def build_folder(root: Path) -> int:
    """The bundled digits rendered as RGB at several sizes, as PNG and JPEG; return the count."""
    pixels, labels = digits_images()
    count = 0
    for index, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        base = Image.fromarray(image).convert("RGB")
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        for size in SIZES:
            scaled = base.resize((size, size), Image.Resampling.BILINEAR)
            for fmt, suffix in FORMATS.items():
                scaled.save(folder / f"{index:04d}_{size}{suffix}", format=fmt)
                count += 1
    return count


def timed(function: Callable[[Path], object], scratch: Path) -> float:
    target = Path(tempfile.mkdtemp(dir=scratch))
    start = time.perf_counter()
    function(target)
    elapsed = time.perf_counter() - start
    shutil.rmtree(target)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each tool")
    args = parser.parse_args()

    images = BENCH_DIR / "images"
    if not images.exists():
        print(f"building the benchmark folder in {images.relative_to(ROOT)} ...")
        build_folder(images)
    count = sum(1 for _ in images.rglob("*.*"))
    print(f"{count} images ({len(SIZES)} sizes x {len(FORMATS)} formats of 1,797 digit scans)")

    params = load_params()
    cfg, seed, channels = params.split, params.base.seed, 3
    ratio = (cfg.fractions["train"], cfg.fractions["validation"], cfg.fractions["test"])

    def ours(target: Path) -> None:
        table = build_split(images, SplitSetup(cfg, seed, channels), previous={})
        write_split(table, images, target, SplitSetup(cfg, seed, channels))

    def theirs(target: Path) -> None:
        with contextlib.redirect_stderr(io.StringIO()):  # its progress bar
            splitfolders.ratio(str(images), output=str(target), seed=seed, ratio=ratio, move=False)

    scratch = BENCH_DIR / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    timed(ours, scratch), timed(theirs, scratch)  # warm the page cache and the imports
    runs: dict[str, list[float]] = {"split stage": [], "split-folders": []}
    for _ in range(args.repeat):
        runs["split stage"].append(timed(ours, scratch))
        runs["split-folders"].append(timed(theirs, scratch))
    medians = {name: statistics.median(times) for name, times in runs.items()}
    for name, times in runs.items():
        shown = ", ".join(f"{t:.2f}" for t in times)
        print(f"{name:14s} median {medians[name]:.2f} s  (runs: {shown})")
    ratio_of_medians = medians["split stage"] / medians["split-folders"]
    print(f"ratio split stage / split-folders: {ratio_of_medians:.2f} (below 1: ours is faster)")

    split_dir = scratch / "split"
    ours(split_dir)
    elapsed, outcomes = time_validate(images, split_dir, scratch / "data_docs")
    failed = sorted({o["table"] for o in outcomes if not o["success"]})
    print(
        f"validate stage on the {count}-image split: {elapsed:.2f} s ({len(outcomes)} "
        f"expectations incl. decoding, perceptual hashes and Data Docs; failed: {failed or 'none'})"
    )
    if "near_duplicates" in failed:
        print("  (rightly: every scan is in the folder at six sizes and two formats, so copies of")
        print("   one scan land in different splits: the near-duplicate leakage the gate is for)")
    shutil.rmtree(scratch, ignore_errors=True)


def time_validate(raw_dir: Path, split_dir: Path, docs_dir: Path) -> tuple[float, list[dict]]:
    """Run everything the validate stage does on a split, timed."""
    params = load_params()
    start = time.perf_counter()
    manifest = mf.read_manifest(split_dir / "manifest.csv")
    placed = mf.in_splits(manifest)
    facts = gate.image_facts(split_dir, placed["path"].tolist(), 3, Rules.of(params.split))
    near = gate.confirm_near_duplicates(split_dir, placed, facts, params.split)
    classes = read_labels(split_dir / "labels.json").classes
    raw = list_raw(raw_dir)
    evidence = gate.Evidence(manifest, raw, facts, near, classes)
    checks = gate.build_checks(evidence, params.split, 3, params.validate_)
    outcomes = gate.run_checks(checks, docs_dir)
    localise_pages(docs_dir)
    return time.perf_counter() - start, outcomes


if __name__ == "__main__":
    main()
