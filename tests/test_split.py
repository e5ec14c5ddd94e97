import pandas as pd
import pytest

from pipeline.split import SplitError, build_manifest, split_assignments, split_sizes
from tests.conftest import write_png


def test_split_sizes_give_every_split_an_image():
    assert split_sizes(100, 0.15, 0.15) == {"train": 70, "validation": 15, "test": 15}
    assert split_sizes(3, 0.15, 0.15) == {"train": 1, "validation": 1, "test": 1}


def _listing(counts: dict[str, int]) -> pd.DataFrame:
    rows = [
        {"label": label, "sha256": f"{label}-{i}"} for label, n in counts.items() for i in range(n)
    ]
    return pd.DataFrame(rows)


def test_assignments_are_stratified_and_seeded():
    listing = _listing({"a": 100, "b": 40})
    first = split_assignments(listing, 0.15, 0.15, seed=1)
    assert first.equals(split_assignments(listing, 0.15, 0.15, seed=1))
    assert not first.equals(split_assignments(listing, 0.15, 0.15, seed=2))
    counts = pd.crosstab(listing["label"], first)
    assert counts.loc["a"].to_dict() == {"test": 15, "train": 70, "validation": 15}
    assert counts.loc["b"].to_dict() == {"test": 6, "train": 28, "validation": 6}


def test_identical_files_share_a_split():
    listing = _listing({"a": 30})
    listing.loc[len(listing)] = {"label": "a", "sha256": "a-7"}  # the same bytes twice
    splits = split_assignments(listing, 0.15, 0.15, seed=0)
    assert splits[listing["sha256"] == "a-7"].nunique() == 1


def test_assignment_does_not_depend_on_row_order():
    listing = _listing({"a": 50})
    shuffled = listing.sample(frac=1, random_state=3)
    assert split_assignments(listing, 0.2, 0.2, 5).equals(
        split_assignments(shuffled, 0.2, 0.2, 5).sort_index()
    )


def test_too_small_class_is_named():
    with pytest.raises(SplitError, match=r"class 'b' has 2 distinct image\(s\); at least 3"):
        split_assignments(_listing({"a": 30, "b": 2}), 0.15, 0.15, seed=0)


def test_manifest_lists_every_image_once(image_tree):
    manifest = build_manifest(image_tree, 0.2, 0.2, seed=0)
    assert len(manifest) == 30
    assert manifest["raw_path"].is_unique
    assert (manifest["path"] == manifest["split"] + "/" + manifest["raw_path"]).all()
    assert set(manifest.groupby("label")["split"].nunique()) == {3}


def test_bad_files_stop_the_split_with_their_names(image_tree):
    (image_tree / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (image_tree / "owl" / "empty.jpg").touch()
    write_png(image_tree / "cat" / "fine.png", 999)
    with pytest.raises(SplitError) as error:
        build_manifest(image_tree, 0.2, 0.2, seed=0)
    message = str(error.value)
    assert message.startswith(f"2 file(s) in {image_tree} are not usable images:")
    assert "dog/broken.png: not a readable image" in message
    assert "owl/empty.jpg: empty file" in message
