"""Training throughput of the train stage's input pipeline against three others
(`make bench-train`), with the same model and batch size, over JPEG splits:

  (a) the train stage: tf.data over the split manifest, parallel decoding, cache, prefetch
  (b) the same images as tensors already in memory: the compute bound of this machine
  (c) the keras.io recipe: image_dataset_from_directory + cache + prefetch
  (d) a per-batch Python/Pillow generator, like the article's ImageDataGenerator

Each method runs in its own process (so its peak memory is its own) for two epochs: the first
pays for decoding, later ones show what the pipeline costs once warm. Printed: images per
second per epoch, peak memory, and the ratios (a)/(b) and (a)/(c).
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from pipeline.paths import ROOT

BENCH_DIR = ROOT / ".bench"
EPOCHS = 2
SOURCES = {64: 21_564, 512: 21_564}  # source JPEG side -> images


def build_jpeg_split(side: int, count: int) -> Path:
    """Digit scans as RGB JPEGs of `side` pixels (shifted copies up to `count`), split by the
    split stage; returns the split folder."""
    from pipeline.imagedata.assignment import SplitSetup, build_split, write_split
    from pipeline.imagedata.sources import digits_images
    from pipeline.params import load_params

    raw = BENCH_DIR / f"jpeg{side}" / "raw"
    split = BENCH_DIR / f"jpeg{side}" / "split"
    if (split / "manifest.csv").exists():
        return split
    pixels, labels = digits_images()
    rng = np.random.default_rng(0)
    made = sum(1 for _ in raw.rglob("*.jpg")) if raw.is_dir() else 0
    for n in range(count if made != count else 0):  # a run stopped before the split redoes it
        index = n % len(labels)
        base = Image.fromarray(pixels[index]).resize((side, side), Image.Resampling.BILINEAR)
        shift = tuple(int(v) for v in rng.integers(-side // 16, side // 16 + 1, size=2))
        image = Image.new("L", (side, side))
        image.paste(base, shift)
        folder = raw / str(labels[index])
        folder.mkdir(parents=True, exist_ok=True)
        image.convert("RGB").save(folder / f"{n:05d}.jpg", quality=90)
    params = load_params()
    table = build_split(raw, SplitSetup(params.split, params.base.seed, 3), previous={})
    write_split(table, raw, split, SplitSetup(params.split, params.base.seed, 3))
    return split


def run_method(method: str, split: Path) -> dict:
    """Train the default model for EPOCHS epochs fed by `method`; images/s per epoch."""
    import tensorflow as tf

    from pipeline.contracts import read_labels
    from pipeline.imagedata.dataset import image_dataset, read_split
    from pipeline.imagedata.manifest import split_channels
    from pipeline.params import load_params
    from pipeline.training.batching import resolve_batch_size
    from pipeline.training.callbacks import Throughput
    from pipeline.training.devices import configure_devices, cpu_has_bf16, visible_gpus
    from pipeline.training.model import build_model
    from pipeline.training.settings import resolve_input, resolve_precision

    params = load_params()
    base, cfg = params.base, params.train
    gpus = visible_gpus(cfg.device.memory_growth)
    configure_devices(*resolve_precision(cfg.device, gpus, "none", cpu_has_bf16()), gpus)
    keras.utils.set_random_seed(base.seed)
    classes = read_labels(split / "labels.json").classes
    rows = read_split("train", split / "manifest.csv")
    size = resolve_input(params, rows, split_channels(split)).image_size
    batch = resolve_batch_size(cfg.batch_size, len(rows))
    model = build_model((size, size, 3), len(classes), cfg.model, cfg.augmentation, base.seed)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    meter = Throughput()
    fit = {"epochs": EPOCHS, "callbacks": [meter], "verbose": 0}

    if method == "a":
        data = image_dataset(rows, classes, size, 3, batch, shuffle_seed=base.seed, root=split)
        model.fit(data, steps_per_epoch=int(np.ceil(len(rows) / batch)), **fit)
    elif method == "b":
        decoded = image_dataset(rows, classes, size, 3, 512, root=split, cache="off")
        images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in decoded], strict=True)
        model.fit(np.concatenate(images), np.concatenate(labels), batch_size=batch, **fit)
    elif method == "c":
        data = keras.utils.image_dataset_from_directory(
            split / "train",
            image_size=(size, size),
            batch_size=batch,
            label_mode="categorical",
            class_names=classes,
            shuffle=True,
            seed=base.seed,
        )
        data = data.map(lambda x, y: (tf.cast(x, tf.uint8), y)).cache().prefetch(tf.data.AUTOTUNE)
        model.fit(data, **fit)
    else:
        model.fit(PillowBatches(rows, split, classes, size, batch), **fit)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "method": method,
        "images": len(rows),
        "images_per_second": [round(len(rows) / s, 1) for s in meter.seconds],
        "peak_mib": round(peak_mib),
    }


class PillowBatches(keras.utils.PyDataset):
    """One batch at a time from files with Pillow, like the article's ImageDataGenerator."""

    def __init__(self, rows, split: Path, classes: list[str], size: int, batch: int) -> None:
        super().__init__()
        self.paths = [split / p for p in rows["path"]]
        index = {name: i for i, name in enumerate(classes)}
        self.labels = np.eye(len(classes), dtype=np.float32)[[index[n] for n in rows["label"]]]
        self.size, self.batch = size, batch
        self.order = np.random.default_rng(0).permutation(len(self.paths))

    def __len__(self) -> int:
        return int(np.ceil(len(self.paths) / self.batch))

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        chosen = self.order[i * self.batch : (i + 1) * self.batch]
        images = [
            np.asarray(
                Image.open(self.paths[j]).convert("RGB").resize((self.size, self.size)),
                dtype=np.uint8,
            )
            for j in chosen
        ]
        return np.stack(images), self.labels[chosen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", choices=["a", "b", "c", "d"])
    parser.add_argument("--side", type=int, choices=sorted(SOURCES))
    parser.add_argument("--sides", default="64,512", help="source sizes to measure, e.g. `512`")
    parser.add_argument("--only", default="abcd", help="methods to run, for example `ac`")
    parser.add_argument("--repeats", type=int, default=1, help="runs per method (medians)")
    args = parser.parse_args()
    if args.method:  # one measurement, in this process
        split = BENCH_DIR / f"jpeg{args.side}" / "split"
        print(json.dumps(run_method(args.method, split)))
        return

    names = {
        "a": "train stage (tf.data, cache, prefetch)",
        "b": "tensors in memory (compute bound)",
        "c": "keras.io recipe (image_dataset_from_directory)",
        "d": "Python/Pillow generator (ImageDataGenerator-like)",
    }
    for side, count in SOURCES.items():
        if str(side) not in args.sides.split(","):
            continue
        start = time.perf_counter()
        split = build_jpeg_split(side, count)
        prepared = time.perf_counter() - start
        print(f"\nsource JPEGs of {side}x{side} px, {count} images ({prepared:.0f} s to prepare)")
        runs: dict[str, list[dict]] = {}
        for repeat in range(args.repeats):  # methods alternate, so drift hits all alike
            for method in [m for m in names if m in args.only]:
                command = [sys.executable, "-m", "benchmarks.train_benchmark"]
                command += ["--method", method, "--side", str(side)]
                output = subprocess.run(
                    command, capture_output=True, text=True, check=True, cwd=ROOT
                ).stdout
                result = json.loads(output.strip().splitlines()[-1])
                runs.setdefault(method, []).append(result)
                speeds = result["images_per_second"]
                print(
                    f"  ({method}) {names[method]:50s} epoch 1: {speeds[0]:7.1f} img/s, "
                    f"later: {speeds[-1]:7.1f} img/s, peak {result['peak_mib']} MiB"
                    + (f"  [run {repeat + 1}]" if args.repeats > 1 else "")
                )
        results = {
            m: {
                "images_per_second": [
                    float(np.median([r["images_per_second"][i] for r in rs])) for i in range(EPOCHS)
                ]
            }
            for m, rs in runs.items()
        }
        if args.repeats > 1:
            print(f"  medians of {args.repeats} runs:")
            for m, r in results.items():
                first, later = r["images_per_second"][0], r["images_per_second"][-1]
                print(f"  ({m}) epoch 1: {first:7.1f} img/s, later: {later:7.1f} img/s")
        speed = {m: r["images_per_second"] for m, r in results.items()}
        if {"a", "b"} <= speed.keys():
            ratio = speed["a"][-1] / speed["b"][-1]
            print(f"  (a)/(b) after the first epoch: {ratio:.2f}  (goal >= 0.95)")
        if {"a", "c"} <= speed.keys():
            first, later = (speed["a"][i] / speed["c"][i] for i in (0, -1))
            print(f"  (a)/(c) first epoch: {first:.2f}, later: {later:.2f}  (goal >= 1.0)")


if __name__ == "__main__":
    main()
