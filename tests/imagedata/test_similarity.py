"""imagedata.similarity: the hash-candidate search and the groups it links."""

import numpy as np

from pipeline.imagedata import similarity
from pipeline.imagedata.similarity import close_pairs, group_ids


def test_close_pairs_are_every_pair_within_the_distance_across_blocks():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 2 * similarity.BLOCK + 100, dtype=np.uint64)
    hashes[-300:] = hashes[:300] ^ np.uint64(0b101)  # 2 bits from an image blocks earlier
    distances = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    rows, cols = np.nonzero(distances <= 4)
    expected = {(r, c) for r, c in zip(rows, cols, strict=True) if r < c}
    found = close_pairs(hashes, 4)
    assert len(found) == len(expected) >= 300
    assert {tuple(pair) for pair in found.tolist()} == expected


def test_groups_are_the_connected_images():
    ids = group_ids(5, np.array([[0, 1], [1, 3]]))
    assert ids[0] == ids[1] == ids[3] and len({ids[0], ids[2], ids[4]}) == 3
