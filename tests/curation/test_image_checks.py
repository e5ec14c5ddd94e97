"""The audit's image checks on a tiny split: cleanvision finds a dark image; the duplicates are
the split's own (the manifest's sha256 and near-duplicate group), never judged again."""

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.curation import image_checks

CHECKS = ["dark", "exact_duplicates", "near_duplicates"]


def _split(tmp_path):
    """Twelve 24x24 images in two classes: one nearly black, one a byte-for-byte copy of an
    image of the other class; rows as the manifest has them."""
    rng = np.random.default_rng(0)
    rows = []
    for index in range(12):
        label = "cat" if index < 6 else "dog"
        pixels = rng.integers(60, 255, (24, 24), dtype=np.uint8)
        if index == 2:
            pixels = rng.integers(0, 6, (24, 24), dtype=np.uint8)
        path = f"train/{label}/{index}.png"
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(tmp_path / path)
        rows.append(
            {
                "raw_path": f"{label}/{index}.png",
                "path": path,
                "split": "train",
                "label": label,
                "sha256": f"{index:064x}",
                "group": "",
            }
        )
    (tmp_path / "train/dog/11.png").write_bytes((tmp_path / "train/cat/4.png").read_bytes())
    rows[11]["sha256"] = rows[4]["sha256"]  # a copy kept under two classes
    rows[7]["group"] = rows[8]["group"] = rows[7]["sha256"]  # near duplicates, as the split grouped
    return pd.DataFrame(rows)


def _checked(rows, checks, root):
    flags, scores = image_checks.cleanvision_checks(rows, checks, root, 1)
    flags = pd.concat([flags, image_checks.duplicate_flags(rows, checks)], axis=1)[checks]
    return image_checks.issue_table(rows, flags, scores)


def test_a_dark_image_and_the_splits_duplicates_are_reported(tmp_path):
    rows = _split(tmp_path)
    flagged = _checked(rows, CHECKS, tmp_path)
    issues = dict(zip(flagged["raw_path"], flagged["issues"], strict=True))
    assert issues == {
        "cat/2.png": "dark",
        "cat/4.png": "exact_duplicates",
        "dog/11.png": "exact_duplicates",
        "dog/7.png": "near_duplicates",
        "dog/8.png": "near_duplicates",
    }
    assert flagged.columns.tolist()[-1] == "dark_score"

    counts = image_checks.counts_per_class(rows, flagged, CHECKS).set_index("class")
    assert counts.loc["cat", "dark"] == 1
    assert counts.loc["(all)", "images"] == 12
    assert counts.loc["(all)", "exact_duplicates"] == 2
    assert counts.loc["dog", "near_duplicates"] == 2

    sets = image_checks.duplicate_sets(rows, CHECKS).set_index("kind")
    exact = sets.loc["exact_duplicates"]
    assert exact["classes"] == "cat;dog"
    assert bool(exact["conflicting_labels"])
    assert set(exact["raw_paths"].split(";")) == {"cat/4.png", "dog/11.png"}
    near = sets.loc["near_duplicates"]
    assert (near["size"], near["classes"], bool(near["conflicting_labels"])) == (2, "dog", False)


def test_duplicate_checks_alone_never_open_a_file(tmp_path):
    rows = _split(tmp_path)
    for path in rows["path"]:
        (tmp_path / path).unlink()
    flagged = _checked(rows, ["exact_duplicates", "near_duplicates"], tmp_path)
    assert len(flagged) == 4


def test_a_check_that_flags_nothing_counts_zero_in_every_class(tmp_path):
    rows = _split(tmp_path)
    flagged = _checked(rows, ["light"], tmp_path)
    assert flagged.empty
    counts = image_checks.counts_per_class(rows, flagged, ["light"])
    assert counts["light"].tolist() == [0, 0, 0]
    assert counts["class"].tolist() == ["cat", "dog", "(all)"]
