"""Near duplicates: what makes two files the same picture although their bytes differ.

A pair is a candidate when the two images' 64-bit perceptual hashes (imagehash's pHash) are
within `split.near_duplicate_distance` bits, and a near duplicate when the two images, in grey
at a common size (COMPARE_SIZE, or the smallest side when smaller), correlate at or above
`split.near_duplicate_correlation`: near 1 for a resized, re-encoded, re-lit or lightly cropped
copy, lower for a different object of the same outline (the hash alone cannot tell those apart
on small centred images; README, "The data gate", has the measurement). The split keeps every
group of near duplicates in one split; the gate checks that none crosses from training to
validation or test.
"""

from functools import partial
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.common.parallel import parallel_map

COMPARE_SIZE = 32  # near-duplicate candidates are compared at most this many pixels a side
BLOCK = 512  # rows of the Hamming-distance matrix computed at a time


def perceptual_hash(image: Image.Image) -> str:
    """The image's 64-bit pHash as 16 hex digits."""
    return str(imagehash.phash(image))


def hash_array(hashes: pd.Series) -> np.ndarray:
    """Hex perceptual hashes as unsigned 64-bit integers (0 where an image had none)."""
    return np.array([int(h, 16) if isinstance(h, str) else 0 for h in hashes], dtype=np.uint64)


def compare_size(sides: pd.Series) -> int:
    """The common size pairs are compared at: COMPARE_SIZE, or the smallest side if smaller."""
    smallest = pd.to_numeric(sides, errors="coerce").min()
    return int(min(COMPARE_SIZE, smallest)) if pd.notna(smallest) else COMPARE_SIZE


def comparable(image: Image.Image, size: int) -> np.ndarray:
    """The image in grey at `size` x `size` (area resampling), scaled to zero mean and unit
    variance, so a brightness or contrast change leaves it as it was; the mean of the
    product of two is their Pearson correlation."""
    grey = image.convert("L").resize((size, size), Image.Resampling.BOX)
    values = np.asarray(grey, dtype=np.float32).ravel()
    spread = values.std()
    return (values - values.mean()) / (spread if spread > 1e-3 else 1.0)


def _pixels(root: Path, size: int, path: str) -> np.ndarray:
    with Image.open(root / path) as image:
        return comparable(image, size)


def pixel_correlations(root: Path, pairs: list[tuple[str, str]], size: int) -> np.ndarray:
    """The Pearson correlation of each pair of images (paths under `root`) in grey at
    `size` x `size`."""
    paths = sorted({path for pair in pairs for path in pair})
    loaded = parallel_map(partial(_pixels, root, size), paths, "near duplicates: comparing")
    vectors = dict(zip(paths, loaded, strict=True))
    return np.array([float(np.mean(vectors[a] * vectors[b])) for a, b in pairs])


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


def group_ids(count: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components of `count` items linked by `pairs`: one id per item."""
    ones = np.ones(len(pairs), dtype=np.int8)
    graph = coo_matrix((ones, (pairs[:, 0], pairs[:, 1])), shape=(count, count))
    return connected_components(graph, directed=False)[1]
