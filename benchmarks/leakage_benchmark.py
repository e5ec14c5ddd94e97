"""`make bench-leakage`: the near-duplicate gate on Fashion-MNIST's official split, and on a
folder of drawings (`ARGS="--drawings FOLDER"`).

Fashion-MNIST: how many real test images the gate confirms as near duplicates of a training
image, beside how many the perceptual hash alone would have flagged, and the share of planted
copies it catches (resized, JPEG re-encoded, brightened, lower contrast, cropped), with the
thresholds in params.yaml. Needs the IDX files (`apt-get install dataset-fashion-mnist`, or
FASHION_MNIST_DIR); works on arrays in memory, through the gate's own hash, candidate search
and comparison.

Drawings (transparent PNGs, such as `scripts/real_folders.py`'s): planted copies of a seeded
sample (halved, JPEG re-encoded on white, hue turned, darkened, cropped) and two look-alikes
of each (its silhouette in black; another drawing of the sample cut to its outline), every
image seen as the model sees it (`images.seen_grey`): the share the gate confirms of each.
"""

import argparse
import io
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance

from pipeline.imagedata.checks import hash_neighbours
from pipeline.imagedata.images import Rules, seen_grey
from pipeline.imagedata.similarity import (
    COMPARE_SIZE,
    FIRST_CROPPED,
    PLAIN,
    RESAMPLING,
    SECOND_CROPPED,
    comparable,
    comparables,
    confirmed,
    crop_array,
    crop_hashes,
    crop_pairs,
    hash_array,
    pair_correlation,
    perceptual_hash,
)
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
        "1-pixel crop": image.crop((1, 1, side - 1, side - 1)).resize((side, side)),
        "2-pixel crop": image.crop((2, 2, side - 2, side - 2)).resize((side, side)),
        "3-pixel crop": image.crop((3, 3, side - 3, side - 3)).resize((side, side)),
        "2-pixel crop, one corner": image.crop((2, 2, side, side)).resize((side, side)),
    }


def _correlation(first: Image.Image, second: Image.Image, cropped: int, size: int) -> float:
    """The gate's comparison (`similarity.pixel_correlations`) of two images in memory."""
    return pair_correlation(
        comparables(first, size, registered=cropped == SECOND_CROPPED),
        comparables(second, size, registered=cropped == FIRST_CROPPED),
        cropped,
        size,
    )


def _hashes(images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
    plain = hash_array([perceptual_hash(image) for image in images])
    return plain, crop_array([crop_hashes(image) for image in images])


def _caught(copy: Image.Image, original: Image.Image, within: int, threshold: float) -> bool:
    """Whether the gate proposes the pair (plain or crop hash) and its pixels confirm it."""
    mine, theirs = _hashes([copy]), _hashes([original])
    kinds = list(crop_pairs(mine, theirs, within)["cropped"])
    if int(np.bitwise_count(mine[0][0] ^ theirs[0][0])) <= within:
        kinds.append(PLAIN)
    size = min(COMPARE_SIZE, *original.size, *copy.size)
    correlations = [_correlation(copy, original, kind, size) for kind in kinds]
    return bool(confirmed(correlations, threshold).any())


DRAWINGS = 300  # drawings sampled from the folder
WHITE = (255, 255, 255, 255)
LOOK_ALIKE = "look-alike"
VISIBLE = 16  # grey levels: see `_visibly_different`


def _hue(drawing: Image.Image, turn: int) -> Image.Image:
    hsv = np.asarray(drawing.convert("RGB").convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + turn) % 256
    turned = Image.fromarray(hsv, "HSV").convert("RGBA")
    turned.putalpha(drawing.getchannel("A"))
    return turned


def _drawing_copies(drawing: Image.Image, other: Image.Image) -> dict[str, Image.Image]:
    """Copies of an RGBA drawing that are the same picture, then two that are not."""
    width, height = drawing.size
    jpeg = io.BytesIO()
    Image.alpha_composite(Image.new("RGBA", drawing.size, WHITE), drawing).convert("RGB").save(
        jpeg, "JPEG", quality=75
    )
    cut = round(0.035 * width), round(0.035 * height)
    dark = drawing.copy()
    dark.paste(ImageEnhance.Brightness(drawing.convert("RGB")).enhance(0.7), mask=None)
    dark.putalpha(drawing.getchannel("A"))
    silhouette = Image.new("RGBA", drawing.size, (0, 0, 0, 255))
    silhouette.putalpha(drawing.getchannel("A"))
    filled = Image.alpha_composite(Image.new("RGBA", other.size, WHITE), other.convert("RGBA"))
    filled = filled.resize(drawing.size)  # on white first: what lies under its transparency
    filled.putalpha(drawing.getchannel("A"))  # is no part of the picture
    return {
        "halved": drawing.resize((width // 2, height // 2), Image.Resampling.BILINEAR),
        "JPEG quality 75, on white": Image.open(io.BytesIO(jpeg.getvalue())),
        "hue turned 90 degrees": _hue(drawing, 64),
        "darkened (brightness 0.7)": dark,
        "3.5% crop on every side, enlarged back": drawing.crop(
            (cut[0], cut[1], width - cut[0], height - cut[1])
        ).resize((width, height)),
        "look-alike: its silhouette in black": silhouette,
        "look-alike: another drawing cut to its outline": filled,
    }


def _visibly_different(first: Image.Image, second: Image.Image) -> bool:
    """Whether two grey images differ as the model sees them: by VISIBLE grey levels or more
    on average over the pixels where either is not white, at the compare size. A black
    drawing's silhouette is the drawing itself; a look-alike that is not different is not
    counted as one."""
    a, b = (np.asarray(i.resize((COMPARE_SIZE,) * 2, RESAMPLING), float) for i in (first, second))
    drawn = (a < 255 - VISIBLE) | (b < 255 - VISIBLE)
    return bool(drawn.any() and np.abs(a - b)[drawn].mean() >= VISIBLE)


def drawings(folder: Path, within: int, threshold: float) -> None:
    """The planted copies and look-alikes of a seeded sample of the folder's drawings."""
    files = sorted(folder.rglob("*.png"))
    rng = np.random.default_rng(0)
    chosen = [files[i] for i in rng.choice(len(files), min(DRAWINGS, len(files)), replace=False)]
    rules, caught, same = Rules(), {}, {}
    for index, path in enumerate(chosen):
        with Image.open(path) as image, Image.open(chosen[index - 1]) as other:
            drawing = image.convert("RGBA")
            if min(drawing.size) < 2 * COMPARE_SIZE:  # halved, still at the compare size
                continue
            original = seen_grey(drawing, rules)
            for kind, copy in _drawing_copies(drawing, other).items():
                seen = seen_grey(copy, rules)
                if kind.startswith(LOOK_ALIKE) and not _visibly_different(seen, original):
                    same.setdefault(kind, []).append(path.name)
                    continue
                caught.setdefault(kind, []).append(_caught(seen, original, within, threshold))
    count = len(next(iter(caught.values())))
    print(
        f"{folder}: {count} drawings of at least {2 * COMPARE_SIZE} px a side, share confirmed "
        f"(hash within {within} bits, correlation >= {threshold}):"
    )
    for kind, found in caught.items():
        note = f" of {len(found)}: {len(same[kind])} are the drawing itself" if kind in same else ""
        print(f"  {kind:48} {np.mean(found):6.1%}{note}")
    rule = f"differs from the drawing by {VISIBLE} grey levels or more where either is drawn"
    print(f"  (a look-alike counts when it {rule})")


def exact_matches(
    train: list[Image.Image], test: list[Image.Image], size: int, threshold: float
) -> set:
    """The test images (positions) with a training image whose pixels correlate at
    `threshold` or above (`comparable` and `confirmed`, the gate's plain comparison and
    rule), found without the hash: every pair, as one matrix product a block of test images
    at a time."""
    train_rows = np.stack([comparable(image, size) for image in train])
    found = set()
    for start in range(0, len(test), 1000):
        block = np.stack([comparable(image, size) for image in test[start : start + 1000]])
        best = (block @ train_rows.T).max(axis=1) / (size * size)
        found |= set(np.nonzero(confirmed(best, threshold))[0] + start)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--drawings", type=Path, help="a folder of drawings instead of Fashion-MNIST"
    )
    args = parser.parse_args()
    cfg = load_params().split
    if args.drawings:
        drawings(args.drawings, cfg.near_duplicate_distance, cfg.near_duplicate_correlation)
        return
    within, threshold = cfg.near_duplicate_distance, cfg.near_duplicate_correlation
    folder = fashion_mnist_folder()
    train = read_idx(_idx_file(folder, "train-images-idx3-ubyte"))
    test = read_idx(_idx_file(folder, "t10k-images-idx3-ubyte"))
    size = min(COMPARE_SIZE, train.shape[1])
    start = time.perf_counter()
    images = [Image.fromarray(a) for a in (*train, *test)]
    hashes = pd.Series([perceptual_hash(image) for image in images])
    crops = pd.Series([crop_hashes(image) for image in images])
    placed = pd.DataFrame(
        {"path": hashes.index, "split": ["train"] * len(train) + ["test"] * len(test)}
    )
    _, pairs = hash_neighbours(placed.assign(label=""), hashes, within, crops)
    correlation = np.array(
        [
            _correlation(images[len(train) + held], images[index], cropped, size)
            for held, index, cropped in pairs[["held", "train", "cropped"]].to_numpy()
        ]
    )
    plain = pairs["cropped"] == PLAIN
    flagged, by_crop = set(pairs.loc[plain, "held"]), set(pairs.loc[~plain, "held"])
    near = pairs[confirmed(correlation, threshold)]
    confirmed_by_crop = set(near["held"]) - set(near.loc[plain, "held"])
    seconds = time.perf_counter() - start
    print(
        f"Fashion-MNIST, official split: {len(test):,} test against {len(train):,} training "
        f"images at {size}x{size} ({seconds:.0f} s)"
    )
    print(
        f"  hash within {within} bits: {len(flagged):,} test images "
        f"({len(flagged) / len(test):.1%}); by a crop's hash: {len(by_crop):,}"
    )
    print(
        f"  confirmed (correlation >= {threshold}): {near['held'].nunique():,} "
        f"({near['held'].nunique() / len(test):.1%}), {len(confirmed_by_crop)} of them "
        "only as a crop"
    )
    truth = exact_matches(images[: len(train)], images[len(train) :], size, threshold)
    proposed = truth & set(pairs["held"])
    share = len(proposed) / len(truth)
    print(
        f"  by their pixels alone (every test image against every training image): "
        f"{len(truth):,} test images have a training image at {threshold} or above; the "
        f"hash proposes {len(proposed):,} of them ({share:.1%})"
    )
    rng = np.random.default_rng(0)
    print(f"planted copies of {PLANTED} training images, share caught:")
    caught: dict[str, list[bool]] = {}
    for index in rng.choice(len(train), PLANTED, replace=False):
        for kind, copy in _copies(train[index]).items():
            found = _caught(copy, images[index], within, threshold)
            caught.setdefault(kind, []).append(found)
    for kind, found in caught.items():
        print(f"  {kind:25} {np.mean(found):.1%}")


if __name__ == "__main__":
    main()
