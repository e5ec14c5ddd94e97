"""cleanvision's checks on a tiny split: a dark image and a copy across classes are found."""

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
        rows.append({"raw_path": f"{label}/{index}.png", "path": path, "split": "train",
                     "label": label})  # fmt: skip
    (tmp_path / "train/dog/11.png").write_bytes((tmp_path / "train/cat/4.png").read_bytes())
    return pd.DataFrame(rows)


def test_a_dark_image_and_a_copy_across_classes_are_reported(tmp_path):
    rows = _split(tmp_path)
    lab = image_checks.run_imagelab([str(tmp_path / p) for p in rows["path"]], CHECKS, 1)
    flagged = image_checks.issue_table(rows, lab, CHECKS, tmp_path)
    issues = dict(zip(flagged["raw_path"], flagged["issues"], strict=True))
    assert issues["cat/2.png"] == "dark"
    assert "exact_duplicates" in issues["cat/4.png"]
    assert "exact_duplicates" in issues["dog/11.png"]

    counts = image_checks.counts_per_class(rows, flagged, CHECKS).set_index("class")
    assert counts.loc["cat", "dark"] == 1
    assert counts.loc["(all)", "images"] == 12
    assert counts.loc["(all)", "exact_duplicates"] == 2

    sets = image_checks.duplicate_sets(rows, lab, CHECKS, tmp_path)
    exact = sets[sets["kind"] == "exact_duplicates"].iloc[0]
    assert exact["classes"] == "cat;dog"
    assert bool(exact["conflicting_labels"])
    assert set(exact["raw_paths"].split(";")) == {"cat/4.png", "dog/11.png"}


def test_a_check_that_flags_nothing_counts_zero_in_every_class(tmp_path):
    rows = _split(tmp_path)
    lab = image_checks.run_imagelab([str(tmp_path / p) for p in rows["path"]], ["light"], 1)
    flagged = image_checks.issue_table(rows, lab, ["light"], tmp_path)
    assert flagged.empty
    counts = image_checks.counts_per_class(rows, flagged, ["light"])
    assert counts["light"].tolist() == [0, 0, 0]
    assert counts["class"].tolist() == ["cat", "dog", "(all)"]
