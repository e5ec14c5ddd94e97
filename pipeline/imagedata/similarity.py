"""Near duplicates: what makes two files the same picture although their bytes differ.

A pair is a candidate when the two images' 64-bit perceptual hashes (pHash, `_dct_hashes`) are
within `split.near_duplicate_distance` bits, or when one image's hash is that close to the hash
of a centred crop of the other (CROPS): a cropped copy, enlarged back to its size, moves the
plain hash by about 16 bits, but matches the crop of the original it was cut from. A candidate
is a near duplicate when the two images, in grey at a common size (COMPARE_SIZE, or the
smallest side when smaller), correlate at or above `split.near_duplicate_correlation`, the
cropped copy against the original's centred crops (REGISTRATIONS, the best of them): near 1
for a resized, re-encoded, re-lit or cropped copy, lower for a different object of the same
outline (the hash alone cannot tell those apart on small centred images; docs/data.md, "The
validation gate", has the measurement). The split keeps every group of near duplicates in one
split; the gate checks that none crosses from training to validation or test.
"""

import itertools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.fft import dct
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.common.parallel import parallel_map

COMPARE_SIZE = 32  # near-duplicate candidates are compared at most this many pixels a side
BLOCK = 512  # rows of the Hamming-distance matrix computed at a time
CROPS = (0.035, 0.07, 0.105)  # centred crops hashed, a share of each side cut: 1, 2, 3 px of 28
REGISTRATIONS = (0.035, 0.0525, 0.07, 0.0875, 0.105)  # the crops a crop candidate is compared to
RESAMPLING = Image.Resampling.LANCZOS  # imagehash's own; it also registers crops sub-pixel
TIE_MARGIN = 0.15  # of the frequencies' mean absolute deviation: see `_dct_hashes`
PLAIN, FIRST_CROPPED, SECOND_CROPPED = 0, 1, 2  # a candidate pair: which image is the crop


def _dct_hashes(image: Image.Image, shares: tuple[float, ...]) -> list[str]:
    """The 64-bit pHash (16 hex digits) of the image and of centred crops of it (`shares` of
    each side cut): pHash's algorithm (the 8x8 lowest frequencies of a 32x32 grey DCT against
    their median) with one change: a frequency counts as above the median only by TIE_MARGIN
    of the frequencies' mean absolute deviation. A symmetric drawing (a star, a centred icon)
    has about half its frequencies at exactly zero, its median among them: imagehash's strict
    `>` then sets those bits by the sign of rounding noise, and a JPEG copy of the drawing
    lands about 20 bits away; with the margin they stay 0 (docs/data.md, "The validation
    gate", has the measurement)."""
    grey = image.convert("L")
    pixels = np.stack(
        [
            np.asarray(grey.resize((32, 32), RESAMPLING, box=_centred(*grey.size, share)))
            for share in shares
        ]
    ).astype(np.float64)
    low = dct(dct(pixels, axis=1), axis=2)[:, :8, :8].reshape(len(shares), 64)
    median = np.median(low, axis=1, keepdims=True)
    waves = low[:, 1:]  # without the mean brightness, which dwarfs the rest
    spread = np.abs(waves - np.median(waves, axis=1, keepdims=True)).mean(axis=1, keepdims=True)
    bits = np.packbits(low > median + TIE_MARGIN * spread, axis=1)
    return [row.tobytes().hex() for row in bits]


def perceptual_hash(image: Image.Image) -> str:
    """The image's 64-bit perceptual hash as 16 hex digits (`_dct_hashes`)."""
    return _dct_hashes(image, (0.0,))[0]


def _centred(width: int, height: int, share: float) -> tuple[float, float, float, float]:
    """The box of a centred crop that cuts `share` of each side off, in sub-pixels."""
    return (share * width, share * height, width - share * width, height - share * height)


def crop_hashes(image: Image.Image) -> str:
    """The perceptual hash of each of the image's centred CROPS, space-separated."""
    return " ".join(_dct_hashes(image, CROPS))


def hash_array(hashes: pd.Series) -> np.ndarray:
    """Hex perceptual hashes as unsigned 64-bit integers (0 where an image had none)."""
    return np.array([int(h, 16) if isinstance(h, str) else 0 for h in hashes], dtype=np.uint64)


def crop_array(hashes: pd.Series) -> np.ndarray:
    """`crop_hashes` strings as an (n, len(CROPS)) uint64 array (0 where an image had none)."""
    rows = [h.split() if isinstance(h, str) else ["0"] * len(CROPS) for h in hashes]
    return np.array([[int(h, 16) for h in row] for row in rows], dtype=np.uint64).reshape(
        len(rows), len(CROPS)
    )


def compare_sizes(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The size each pair is compared at: COMPARE_SIZE, or the pair's smallest side if
    smaller (`first`, `second`: each image's shorter side)."""
    return np.minimum(COMPARE_SIZE, np.minimum(first, second)).astype(np.int64)


def comparable(image: Image.Image, size: int, share: float = 0.0) -> np.ndarray:
    """The image (or its centred crop cutting `share` of each side) in grey at `size` x
    `size`, scaled to zero mean and unit variance, so a brightness or contrast change leaves
    it as it was; the mean of the product of two is their Pearson correlation."""
    grey = image.convert("L")
    grey = grey.resize((size, size), RESAMPLING, box=_centred(*grey.size, share))
    values = np.asarray(grey, dtype=np.float32).ravel()
    spread = values.std()
    return (values - values.mean()) / (spread if spread > 1e-3 else 1.0)


def comparables(image: Image.Image, size: int, registered: bool) -> np.ndarray:
    """The image's `comparable` vector, then (when it is the original of a crop candidate)
    those of its REGISTRATIONS: one row each."""
    shares = (0.0, *REGISTRATIONS) if registered else (0.0,)
    return np.stack([comparable(image, size, share) for share in shares])


def pair_correlation(first: np.ndarray, second: np.ndarray, cropped: int, size: int) -> float:
    """The Pearson correlation of two images' `comparables` at `size`; where `cropped` says
    one is a crop of the other, the best over the other's REGISTRATIONS."""
    if cropped == FIRST_CROPPED:
        first, second = second[1:], first
    elif cropped == SECOND_CROPPED:
        first = first[1:]
    else:
        first = first[:1]
    return float((first @ second[0]).max()) / (size * size)


def confirmed(correlations: np.ndarray | pd.Series, threshold: float) -> np.ndarray:
    """Which pairs are near duplicates: those whose correlation (`pixel_correlations`) is at
    `threshold` (`split.near_duplicate_correlation`) or above, unrounded. The split decides
    with it and the gate verifies with it; reports print `shown` correlations."""
    return np.asarray(correlations, dtype=np.float64) >= threshold


def shown(correlations: np.ndarray | pd.Series) -> np.ndarray:
    """Correlations as the reports print them: cut (not rounded) to 4 decimals, so that a
    pair below the threshold never shows at it (0.97997 shows as 0.9799, not 0.98)."""
    return np.floor(np.asarray(correlations, dtype=np.float64) * 10_000) / 10_000


def _pixels(root: Path, view: Callable | None, wanted: tuple[str, tuple[int, ...], bool]) -> dict:
    path, sizes, registered = wanted
    with Image.open(root / path) as image:
        seen = view(image) if view else image
        return {size: comparables(seen, size, registered) for size in sizes}


def pixel_correlations(
    root: Path,
    pairs: list[tuple[str, str]],
    sizes: np.ndarray,
    cropped: np.ndarray | None = None,
    view: Callable[[Image.Image], Image.Image] | None = None,
) -> np.ndarray:
    """The Pearson correlation of each pair of images (paths under `root`, each seen through
    `view`: `images.seen_grey`, so the split's raw files and the gate's stored ones are
    judged as the model sees them) in grey at its size (`sizes`, `compare_sizes`); where
    `cropped` (one per pair: PLAIN, FIRST_CROPPED or SECOND_CROPPED) says one image is a crop
    of the other, the best over the other's REGISTRATIONS."""
    cropped = np.full(len(pairs), PLAIN) if cropped is None else np.asarray(cropped)
    originals = {b for (_, b), c in zip(pairs, cropped, strict=True) if c == FIRST_CROPPED}
    originals |= {a for (a, _), c in zip(pairs, cropped, strict=True) if c == SECOND_CROPPED}
    needed: dict[str, set[int]] = {}
    for (a, b), size in zip(pairs, sizes, strict=True):
        needed.setdefault(a, set()).add(int(size))
        needed.setdefault(b, set()).add(int(size))
    wanted = sorted((p, tuple(sorted(s)), p in originals) for p, s in needed.items())
    work = partial(_pixels, root, view)
    loaded = parallel_map(work, wanted, "near duplicates: comparing")
    vectors = {path: rows for (path, _, _), rows in zip(wanted, loaded, strict=True)}
    return np.array(
        [
            pair_correlation(vectors[a][int(size)], vectors[b][int(size)], crop, int(size))
            for (a, b), size, crop in zip(pairs, sizes, cropped, strict=True)
        ]
    )


def close_pairs(hashes: np.ndarray, within: int) -> np.ndarray:
    """Every pair (i, j), i < j, of `hashes` (uint64) at most `within` bits apart: (n, 2)."""
    found = [np.empty((0, 2), dtype=np.int64)]
    for start in range(0, len(hashes), BLOCK):  # each block against itself and what follows
        block = np.bitwise_count(hashes[start : start + BLOCK, None] ^ hashes[None, start:])
        rows, cols = np.nonzero(block <= within)
        keep = rows < cols
        pairs = np.stack([rows[keep], cols[keep]], axis=1).astype(np.int64) + start
        found.append(pairs)
    return np.concatenate(found)


def _crop_rows(
    first: tuple[np.ndarray, np.ndarray],
    second: tuple[np.ndarray, np.ndarray],
    within: int,
    rows: range,
) -> list[pd.DataFrame]:
    """`crop_pairs` for the rows `rows` of `first`, BLOCK // 2 at a time, in buffers made once
    (a fresh (BLOCK/2, n) uint64 array for every XOR cost more in page faults than the
    arithmetic)."""
    (plain_1, crops_1), (plain_2, crops_2) = first, second
    height = min(BLOCK // 2, len(rows))
    scratch = np.empty((height, len(plain_2)), dtype=np.uint64)
    counts = np.empty(scratch.shape, dtype=np.uint8)
    distances = np.empty(scratch.shape, dtype=np.uint8)
    found = []
    for start in range(rows.start, rows.stop, height):
        stop = min(start + height, rows.stop)
        size = stop - start
        for cropped, sides in (
            (FIRST_CROPPED, [(plain_1[start:stop, None], crop[None, :]) for crop in crops_2.T]),
            (SECOND_CROPPED, [(crop[start:stop, None], plain_2[None, :]) for crop in crops_1.T]),
        ):
            for k, (left, right) in enumerate(sides):
                np.bitwise_xor(left, right, out=scratch[:size])
                np.bitwise_count(scratch[:size], out=counts[:size] if k else distances[:size])
                if k:
                    np.minimum(distances[:size], counts[:size], out=distances[:size])
            hits, cols = np.nonzero(distances[:size] <= within)
            found.append(
                pd.DataFrame(
                    {
                        "first": hits + start,
                        "second": cols,
                        "distance": distances[hits, cols],
                        "cropped": cropped,
                    }
                ).astype(np.int64)
            )
    return found


def crop_pairs(
    first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray], within: int
) -> pd.DataFrame:
    """Every pair (i, j) where the plain hash of one image is at most `within` bits from the
    hash of a centred crop of the other: `first` and `second` are each (plain hashes (n,),
    crop hashes (n, len(CROPS))). Columns `first` and `second` (positions), `distance`, and
    `cropped` (FIRST_CROPPED when first[i] is a crop of second[j], else SECOND_CROPPED); a pair
    found at several crops is listed once, at its smallest distance; sorted by `first`, then
    `second`. The rows are shared among one thread a core (NumPy's XOR and bit counts release
    the GIL)."""
    found = [pd.DataFrame(columns=["first", "second", "distance", "cropped"], dtype=np.int64)]
    count = len(first[0])
    workers = max(1, min(os.cpu_count() or 1, count // (BLOCK // 2)))
    bounds = np.linspace(0, count, workers + 1).astype(int)
    parts = [range(a, b) for a, b in itertools.pairwise(bounds) if b > a]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for part in pool.map(partial(_crop_rows, first, second, within), parts):
            found.extend(part)
    pairs = pd.concat(found, ignore_index=True).sort_values(["distance", "cropped"])
    pairs = pairs.drop_duplicates(["first", "second"])
    return pairs.sort_values(["first", "second"]).reset_index(drop=True)


def group_ids(count: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components of `count` items linked by `pairs`: one id per item."""
    ones = np.ones(len(pairs), dtype=np.int8)
    graph = coo_matrix((ones, (pairs[:, 0], pairs[:, 1])), shape=(count, count))
    return connected_components(graph, directed=False)[1]
