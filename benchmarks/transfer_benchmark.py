"""`make bench-transfer`: the pretrained base against the from-scratch default on a real colour
folder, at 10, 30 and 100 training images a class (issue 37; the seed article's advice).

From `--folder` (one subfolder per class, images found recursively; `--classes` picks the
classes) a seeded draw makes, for each size k, a source of given splits: `test/` the same
`--test` images a class for every k, `validation/` max(3, k // 3) a class and `train/` k a
class, none shared. Each source is run in a copy of the project (this working tree's code and
params.yaml, `ingest.source` pointed at it) by the real `dvc repro train`, twice: with
`train.transfer.base: none` (the CNN of train.model from scratch, every other param its
default) and `efficientnet_lite0` (ImageNet weights). The test accuracy is predict's (the one
inference path) on the test split; the training time is the train stage's own
(`reports/train/metrics.json`).
"""

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.fashion_benchmark import measured
from pipeline.imagedata.images import is_junk
from pipeline.paths import ROOT
from tests.e2e.conftest import edited_params
from tests.projects import make_project

WORK = ROOT / ".bench" / "transfer"
BASES = ("none", "efficientnet_lite0")


def images_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not is_junk(p.name))


def given_splits(folder: Path, classes: list[str], k: int, test: int, seed: int) -> Path:
    """WORK/source-k with train/, validation/ and test/ drawn from `folder` (module doc)."""
    target = WORK / f"source-{k}"
    shutil.rmtree(target, ignore_errors=True)
    validation = max(3, k // 3)
    for label in classes:
        files = images_of(folder / label)
        order = np.random.default_rng(seed).permutation(len(files))
        if len(files) < test + validation + k:
            sys.exit(f"{label}: {len(files)} images, fewer than {test + validation + k}")
        parts = {"test": order[:test], "validation": order[test : test + validation]}
        parts["train"] = order[test + validation : test + validation + k]
        for split, picked in parts.items():
            (target / split / label).mkdir(parents=True)
            for index in picked:
                source = files[index]
                name = "_".join(source.relative_to(folder / label).parts)
                os.link(source, target / split / label / name)
    return target


def test_accuracy(root: Path, env: dict, log: Path) -> float:
    out = root / "test_predictions.csv"
    args = [sys.executable, "-m", "pipeline.tools.predict", "data/split/test", "--out", str(out)]
    measured(args, root, env, log)
    table = pd.read_csv(out)
    truth = table["path"].map(lambda p: Path(p).parent.name)
    return float((table["predicted"] == truth).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--classes", nargs="+", required=True)
    parser.add_argument("--sizes", nargs="+", type=int, default=[10, 30, 100])
    parser.add_argument("--test", type=int, default=40, help="test images a class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    for k in args.sizes:
        source = given_splits(args.folder.resolve(), args.classes, k, args.test, args.seed)
        root = WORK / f"project-{k}"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        env = make_project(root, {"ingest": {"source": str(source)}})
        log = root / "bench.log"
        measured(["dvc", "repro", "validate"], root, env, log)
        for base in BASES:
            with edited_params(root, {"train": {"transfer": {"base": base}}}):
                run = measured(["dvc", "repro", "train"], root, env, log)
                metrics = pd.read_json(root / "reports/train/metrics.json", typ="series")
                accuracy = test_accuracy(root, env, log)
            row = {
                "per class": k,
                "base": base,
                "test accuracy": round(accuracy, 4),
                "epochs": int(metrics["epochs_run"]),
                "train s": round(float(metrics["training_seconds"])),
                "stage s": round(run["seconds"]),
                "peak MB": run["peak_mb"],
            }
            rows.append(row)
            print(row, flush=True)
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False))
    print(f"test: {args.test} a class, classes: {args.classes}; {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
