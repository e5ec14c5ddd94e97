"""imagedata.similarity: the hash-candidate search and the groups it links."""

import io

import imagehash
import numpy as np
from PIL import Image, ImageDraw

from pipeline.imagedata import similarity
from pipeline.imagedata.similarity import (
    CROPS,
    FIRST_CROPPED,
    SECOND_CROPPED,
    close_pairs,
    crop_array,
    crop_hashes,
    crop_pairs,
    group_ids,
    hash_array,
    perceptual_hash,
)
from tests.imagedata.test_checks import _smooth


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


def test_crop_pairs_are_every_pair_within_the_distance_across_blocks_and_threads(monkeypatch):
    """Brute force over every plain-against-crop distance, both ways, against the blocked,
    threaded search (blocks of 4 rows, so each of the two threads runs several)."""
    monkeypatch.setattr(similarity, "BLOCK", 8)
    monkeypatch.setattr(similarity.os, "cpu_count", lambda: 2)
    rng = np.random.default_rng(1)
    plain_1, crops_1 = (
        rng.integers(0, 2**63, 30, dtype=np.uint64),
        rng.integers(0, 2**63, (30, 3), dtype=np.uint64),
    )
    plain_2, crops_2 = (
        rng.integers(0, 2**63, 50, dtype=np.uint64),
        rng.integers(0, 2**63, (50, 3), dtype=np.uint64),
    )
    plain_1[::3] = crops_2[::5, 1][:10] ^ np.uint64(0b11)  # first is a crop of second
    crops_1[1::3, 2] = plain_2[1::5][:10] ^ np.uint64(0b1)  # second is a crop of first
    crops_1[0, 0] = plain_2[0] ^ np.uint64(0b1111)  # both ways for one pair: the closer wins
    expected = {}
    for cropped, distances in (
        (FIRST_CROPPED, np.bitwise_count(plain_1[:, None, None] ^ crops_2[None, :, :]).min(2)),
        (SECOND_CROPPED, np.bitwise_count(crops_1[:, None, :] ^ plain_2[None, :, None]).min(2)),
    ):
        for i, j in zip(*np.nonzero(distances <= 4), strict=True):
            if (i, j) not in expected or distances[i, j] < expected[(i, j)][0]:
                expected[(i, j)] = (int(distances[i, j]), cropped)
    found = crop_pairs((plain_1, crops_1), (plain_2, crops_2), 4)
    assert len(found) == len(expected) >= 20
    assert {(f, s): (d, c) for f, s, d, c in found.values.tolist()} == expected
    assert [tuple(pair) for pair in found[["first", "second"]].values.tolist()] == sorted(expected)


def test_groups_are_the_connected_images():
    ids = group_ids(5, np.array([[0, 1], [1, 3]]))
    assert ids[0] == ids[1] == ids[3] and len({ids[0], ids[2], ids[4]}) == 3


def test_without_the_tie_margin_the_hashes_are_imagehash_phash_of_each_centred_crop(
    monkeypatch,
):
    monkeypatch.setattr(similarity, "TIE_MARGIN", 0.0)
    image = Image.fromarray(_smooth(3, size=50))
    assert perceptual_hash(image) == str(imagehash.phash(image))
    for share, found in zip(CROPS, crop_hashes(image).split(), strict=True):
        box = (share * 50, share * 50, 50 - share * 50, 50 - share * 50)
        crop = image.resize((32, 32), similarity.RESAMPLING, box=box)
        assert found == str(imagehash.phash(crop))


def _star(points: int, size: int = 100) -> Image.Image:
    """A symmetric line drawing, black on white: a star of `points` one-pixel spokes, its
    top-left quarter mirrored into the others (at 100 px JPEG's 8-pixel blocks do not keep
    the symmetry, as on Openclipart's stars)."""
    image = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(image)
    for k in range(points):
        angle = 2 * np.pi * k / points
        end = (size / 2 + 0.45 * size * np.sin(angle), size / 2 - 0.45 * size * np.cos(angle))
        draw.line([(size / 2, size / 2), end], fill=0, width=1)
    quarter = np.asarray(image)[: size // 2, : size // 2]
    half = np.concatenate([quarter, quarter[:, ::-1]], axis=1)
    return Image.fromarray(np.concatenate([half, half[::-1]], axis=0))


def _jpeg(image: Image.Image) -> Image.Image:
    data = io.BytesIO()
    image.save(data, "JPEG", quality=75)
    return Image.open(io.BytesIO(data.getvalue()))


def test_a_jpeg_copy_of_a_symmetric_line_drawing_stays_within_the_hash_distance():
    """Half of a symmetric drawing's low frequencies are zero, its median among them:
    imagehash's pHash sets those bits by rounding noise, and a JPEG copy moves by about 20
    bits (measured: 21 to 24 on these stars); the tie margin keeps them, plain and cropped."""
    for points in (8, 12, 16):
        star = _star(points)
        copy = _jpeg(star)
        assert _bits_apart(perceptual_hash(star), perceptual_hash(copy)) <= 4
        for mine, theirs in zip(crop_hashes(star).split(), crop_hashes(copy).split(), strict=True):
            assert _bits_apart(mine, theirs) <= 4


def _bits_apart(first: str, second: str) -> int:
    return (int(first, 16) ^ int(second, 16)).bit_count()


def test_a_cropped_copy_is_a_crop_candidate_and_says_which_image_is_the_crop():
    """A 4-pixel crop of a 64-pixel image, enlarged back, is far from the original's plain
    hash but within 4 bits of one of its crops; which side is the crop comes out either way."""
    images = [Image.fromarray(_smooth(seed)) for seed in range(6)]
    copy = images[1].crop((4, 4, 60, 60)).resize((64, 64), Image.Resampling.BICUBIC)
    hashes = [perceptual_hash(image) for image in images]
    crops = [crop_hashes(image) for image in images]
    others = (hash_array(hashes), crop_array(crops))
    mine = (hash_array([perceptual_hash(copy)]), crop_array([crop_hashes(copy)]))
    as_first = crop_pairs(mine, others, 4)
    assert as_first[["first", "second", "cropped"]].values.tolist() == [[0, 1, FIRST_CROPPED]]
    as_second = crop_pairs(others, mine, 4)
    assert as_second[["first", "second", "cropped"]].values.tolist() == [[1, 0, SECOND_CROPPED]]
    assert not len(close_pairs(np.concatenate([others[0], mine[0]]), 4))  # the plain hash: no
