"""`make bench-leakage`: the near-duplicate gate on Fashion-MNIST's official split.

How many real test images the gate confirms as near duplicates of a training image, beside
how many the perceptual hash alone would have flagged, and the share of planted copies it
catches (resized, JPEG re-encoded, brightened, lower contrast, cropped), with the thresholds
in params.yaml. Needs the IDX files (`apt-get install dataset-fashion-mnist`, or
FASHION_MNIST_DIR); works on arrays in memory, through the gate's own hash, candidate search
and comparison.
"""

import io
import time

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance

from pipeline.imagedata.checks import hash_neighbours
from pipeline.imagedata.similarity import COMPARE_SIZE, comparable, hash_array, perceptual_hash
from pipeline.imagedata.sources import _idx_file, fashion_mnist_folder, read_idx
from pipeline.params import load_params

PLANTED = 500  # training images copied, per kind of copy


def _copies(pixels: np.ndarray) -> dict[str, Image.Image]:
    image = Image.fromarray(pixels)
    jpeg = io.BytesIO()
    image.save(jpeg, "JPEG", quality=75)
    side = image.width
    return {
        "resized to 2x": image.resize((2 * side, 2 * side), Image.Resampling.BILINEAR),
        "JPEG quality 75": Image.open(io.BytesIO(jpeg.getvalue())).convert("L"),
        "brightness +30": Image.fromarray(
            np.clip(pixels.astype(int) + 30, 0, 255).astype(np.uint8)
        ),
        "contrast 0.8": ImageEnhance.Contrast(image).enhance(0.8),
        "2-pixel crop": image.crop((2, 2, side - 2, side - 2)).resize((side, side)),
    }


def main() -> None:
    cfg = load_params().split
    folder = fashion_mnist_folder()
    train = read_idx(_idx_file(folder, "train-images-idx3-ubyte"))
    test = read_idx(_idx_file(folder, "t10k-images-idx3-ubyte"))
    size = min(COMPARE_SIZE, train.shape[1])
    start = time.perf_counter()
    hashes = pd.Series([perceptual_hash(Image.fromarray(a)) for a in (*train, *test)])
    placed = pd.DataFrame(
        {"path": hashes.index, "split": ["train"] * len(train) + ["test"] * len(test)}
    )
    train_hashes = hash_array(hashes[: len(train)])
    train_vectors = np.stack([comparable(Image.fromarray(a), size) for a in train])
    test_vectors = np.stack([comparable(Image.fromarray(a), size) for a in test])
    _, pairs = hash_neighbours(placed.assign(label=""), hashes, cfg.near_duplicate_distance)
    correlation = (
        np.einsum("ij,ij->i", test_vectors[pairs["held"]], train_vectors[pairs["train"]])
        / test_vectors.shape[1]
    )
    flagged = set(pairs["held"])
    confirmed = set(pairs.loc[correlation >= cfg.near_duplicate_correlation, "held"])
    seconds = time.perf_counter() - start
    print(f"Fashion-MNIST, official split: {len(test):,} test against {len(train):,} training "
          f"images at {size}x{size} ({seconds:.0f} s)")  # fmt: skip
    print(f"  hash within {cfg.near_duplicate_distance} bits: {len(flagged):,} test images "
          f"({len(flagged) / len(test):.1%})")  # fmt: skip
    print(f"  confirmed (correlation >= {cfg.near_duplicate_correlation}): {len(confirmed):,} "
          f"({len(confirmed) / len(test):.1%})")  # fmt: skip
    rng = np.random.default_rng(0)
    print(f"planted copies of {PLANTED} training images, share caught:")
    caught: dict[str, list[bool]] = {}
    for index in rng.choice(len(train), PLANTED, replace=False):
        for kind, copy in _copies(train[index]).items():
            distance = int(
                np.bitwise_count(hash_array([perceptual_hash(copy)])[0] ^ train_hashes[index])
            )
            correlation = float(np.mean(comparable(copy, size) * train_vectors[index]))
            caught.setdefault(kind, []).append(
                distance <= cfg.near_duplicate_distance
                and correlation >= cfg.near_duplicate_correlation
            )
    for kind, found in caught.items():
        print(f"  {kind:16} {np.mean(found):.1%}")


if __name__ == "__main__":
    main()
