"""`make bench-labels`: how well the audit finds planted label mistakes.

A known random share (`--noise`, default 3%) of the images get another class's label, drawn
uniformly from the other classes; the audit's own code (`curation.crossfit` with
`params.yaml`'s `audit` section, then `curation.label_issues`) cross-fits the noisy data and
lists its suspects, scored against the flips: precision, recall and the share flagged, with
the time each part took. Datasets: the bundled digits (1,797 at 8x8, as the pipeline's split
stores them) and Fashion-MNIST's 60,000 training images at 28x28 (the IDX files of
`apt-get install dataset-fashion-mnist`, or FASHION_MNIST_DIR). Works on arrays in memory:
no project copy, no MLflow.
"""

import argparse
import logging
import time

import keras
import numpy as np
import pandas as pd

from pipeline.common.files import write_csv
from pipeline.curation.crossfit import cross_fit
from pipeline.curation.label_issues import found_against, suspects_table
from pipeline.curation.settings import resolve_audit
from pipeline.imagedata.sources import _idx_file, digits_images, fashion_mnist_folder, read_idx
from pipeline.params import load_raw_params, parse_params, set_params
from pipeline.paths import REPORTS_DIR
from pipeline.training.devices import cpu_has_bf16

OUT = REPORTS_DIR / "bench_labels"


def load(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, H, W, 1) and integer labels."""
    if dataset == "digits":
        images, labels = digits_images()
    else:
        folder = fashion_mnist_folder()
        images = read_idx(_idx_file(folder, "train-images-idx3-ubyte"))
        labels = read_idx(_idx_file(folder, "train-labels-idx1-ubyte"))
    return images[..., None], np.asarray(labels, dtype=int)


def plant_flips(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`labels` with a random `share` of them moved to another class (uniformly among the
    others), and the flipped indices."""
    rng = np.random.default_rng(seed)
    classes = int(labels.max()) + 1
    flipped = rng.choice(len(labels), size=round(share * len(labels)), replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, classes, len(flipped))) % classes
    return noisy, np.sort(flipped)


def run(dataset: str, share: float, seed: int, settings: list[str]) -> dict:
    cfg = parse_params(set_params(load_raw_params(), settings)).audit
    images, labels = load(dataset)
    noisy, flipped = plant_flips(labels, share, seed)
    classes = [str(c) for c in range(int(labels.max()) + 1)]
    rows = pd.DataFrame({"raw_path": [f"{i:05d}" for i in range(len(labels))]})
    rows = rows.assign(path=rows["raw_path"], split="train")
    started = time.perf_counter()
    sides = pd.Series([images.shape[1]] * len(labels))  # square images of one size
    settings = resolve_audit(cfg, sides, cpu_has_bf16())
    keras.mixed_precision.set_global_policy(settings.precision)
    fit = cross_fit(images, noisy, np.arange(len(labels)), len(classes), settings, seed)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    suspects = suspects_table(rows, noisy, fit.probabilities, classes, cfg)
    find_seconds = time.perf_counter() - started
    scores = found_against(suspects, set(rows["raw_path"].iloc[flipped]), len(labels))
    OUT.mkdir(parents=True, exist_ok=True)
    truth = pd.Series(labels[suspects["raw_path"].astype(int)], index=suspects.index)
    write_csv(suspects.assign(true_label=truth.astype(str)), OUT / f"{dataset}_suspects.csv")
    return {
        "dataset": dataset,
        "images": len(labels),
        "flipped": len(flipped),
        "out-of-sample accuracy (noisy labels)": float(
            (fit.probabilities.argmax(1) == noisy).mean()
        ),
        "out-of-sample accuracy (true labels)": float(
            (fit.probabilities.argmax(1) == labels).mean()
        ),
        **scores,
        "cross-fit s": round(fit_seconds, 1),
        "cleanlab s": round(find_seconds, 1),
        "epochs": settings.epochs,
        "batch": settings.batch_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="digits,fashion-mnist")
    parser.add_argument("--noise", type=float, default=0.03, help="share of labels flipped")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="params key=value")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = [run(name, args.noise, args.seed, args.set) for name in args.datasets.split(",")]
    table = pd.DataFrame(results).set_index("dataset").T
    write_csv(table, OUT / "results.csv", index=True)
    print(table.to_markdown(floatfmt=".4g"))


if __name__ == "__main__":
    main()
