"""`make bench-photos`: a folder of phone photographs through split, validate and predict, this
working tree's code against an earlier commit's, side by side in one run (issue 37).

The folder (`--photos`, default `.bench/photos/folder`, made by `scripts/real_folders.py`'s
`photos` when missing: 600 camera JPEGs of 4032x3024, a quarter sideways with an EXIF
orientation tag) is ingested by each version in its own copy of the project under
`.bench/photos/` (its code, dvc.yaml and params.yaml, with `ingest.source` pointed at the
folder). Each version's `split` and `validate` commands run in turn and are timed (wall time,
peak memory of the process tree); `data/split` is measured against the source folder. Then
this code trains one model (`--train-epochs`, so that predict has something to load), and
each version's predict classifies the same photos (`--predict` of them, every n-th) with it:
the rate is the images over the seconds predict itself reports (start-up excluded).
"""

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from benchmarks.fashion_benchmark import measured
from pipeline.paths import ROOT
from tests.projects import copy_files, project_env

WORK = ROOT / ".bench" / "photos"
BASE = "a6cc712"  # main before the working size and the pretrained base (issue 37)
CODE = ("pipeline", "dvc.yaml", "params.yaml", "data/relabels.csv")
TARGETS = {"split + validate": 10.0, "predict": 20.0}  # times faster than the base


def folder_size(folder: Path) -> int:
    """Bytes of every file under `folder` (a hard link counted as the file it is)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def ensure_photos(folder: Path) -> Path:
    if not folder.exists():
        sys.path.insert(0, str(ROOT / "scripts"))
        import real_folders

        print(f"making {folder} (scripts/real_folders.py photos) ...", flush=True)
        real_folders.photos(folder)
    return folder


def checkout(name: str, ref: str | None, photos: Path, settings: dict) -> Path:
    """A copy of the project's code at `ref` (None: this working tree) in WORK/name, with
    `ingest.source` at `photos` and `settings` (dotted keys) in its params.yaml."""
    root = WORK / name
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    if ref is None:
        copy_files(CODE, root)
    else:
        archive = subprocess.run(
            ["git", "archive", ref, "--", *CODE], cwd=ROOT, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    params = yaml.safe_load((root / "params.yaml").read_text())
    for key, value in {"ingest.source": str(photos), **settings}.items():
        *parents, last = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        node[last] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def environment(root: Path) -> dict:
    return {**project_env(root), "PYTHONPATH": str(root)}  # the copy's code, not this one's


def stage(root: Path, module: str, *args: str) -> dict:
    return measured(
        [sys.executable, "-m", module, *args], root, environment(root), root / "bench.log"
    )


def predict_rate(root: Path, model: Path, files: list[Path]) -> tuple[float, dict]:
    """Images a second as predict reports them (its own seconds, start-up excluded)."""
    out = root / "predictions.csv"
    log = root / "bench.log"
    before = log.read_text() if log.exists() else ""
    row = stage(
        root, "pipeline.tools.predict", *map(str, files), "--model", str(model), "--out", str(out)
    )
    printed = log.read_text()[len(before) :]
    found = re.search(r"predict: (\d+) images classified in ([\d.]+) s", printed)
    if not found:
        sys.exit(f"predict printed no summary; see {log}")
    return int(found[1]) / float(found[2]), row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=WORK / "folder")
    parser.add_argument("--base", default=BASE, help="the earlier commit (default: %(default)s)")
    parser.add_argument("--predict", type=int, default=4, help="predict every n-th photo")
    parser.add_argument("--train-epochs", type=int, default=2)
    args = parser.parse_args()
    photos = ensure_photos(args.photos.resolve())
    files = sorted(p for p in photos.rglob("*") if p.is_file())
    source = folder_size(photos)
    print(f"{len(files)} photos, {source / 1e6:.0f} MB in {photos}", flush=True)
    versions = {"base": args.base, "this": None}
    results = {}
    for name, ref in versions.items():
        root = checkout(name, ref, photos, {"train.epochs": args.train_epochs})
        stage(root, "pipeline.ingest")
        split, validate = stage(root, "pipeline.split"), stage(root, "pipeline.validate")
        size = folder_size(root / "data" / "split")
        results[name] = {"root": root, "split": split, "validate": validate, "size": size}
        print(
            f"{name:>5} ({ref or 'working tree'}): split {split['seconds']:.1f} s "
            f"({split['peak_mb']} MB), validate {validate['seconds']:.1f} s "
            f"({validate['peak_mb']} MB); data/split {size / 1e6:.0f} MB "
            f"({size / source:.2f} of the source folder)",
            flush=True,
        )
    this = results["this"]["root"]
    trained = stage(this, "pipeline.train")
    print(f"train (this code, {args.train_epochs} epochs): {trained['seconds']:.0f} s", flush=True)
    model = this / "models" / "model.keras"
    chosen = files[:: args.predict]
    for name in versions:
        rate, row = predict_rate(results[name]["root"], model, chosen)
        results[name]["predict"] = rate
        print(
            f"{name:>5}: predict {len(chosen)} photos: {rate:.3g} images/s "
            f"({row['seconds']:.1f} s with start-up, {row['peak_mb']} MB)",
            flush=True,
        )
    base, new = results["base"], results["this"]
    cost = {
        "split + validate": (base["split"]["seconds"] + base["validate"]["seconds"])
        / (new["split"]["seconds"] + new["validate"]["seconds"]),
        "predict": new["predict"] / base["predict"],
    }
    for what, ratio in cost.items():
        verdict = "met" if ratio >= TARGETS[what] else "NOT met"
        print(f"{what}: {ratio:.1f} times faster (target {TARGETS[what]:g}: {verdict})")
    print(
        f"data/split: {new['size'] / source:.2f} of the source folder "
        f"(target 1 or less: {'met' if new['size'] <= source else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
