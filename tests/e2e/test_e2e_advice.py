"""Advice that works when followed: for each expected failure of the split whose message tells
the user what to do, the real `dvc repro` is run, the test does exactly what the message says
(deletes a folder, sets the param it names) and runs `dvc repro` again, which must then get past
that point (docs/data.md, "When the split stops"). One folder, planted with every case at once,
walked through them in the order the split meets them."""

import shutil
import unicodedata

import pandas as pd
import pytest
from PIL import Image

from tests.conftest import save_grey, smooth
from tests.e2e.conftest import edited_params
from tests.projects import make_project
from tests.projects import run as _run

pytestmark = pytest.mark.slow


def _folder(root):
    for c, label in enumerate(["cat", "dog", "owl"]):
        for i in range(10):
            save_grey(smooth(100 * c + i), root / label / f"{i}.png")
    for i in range(10):  # one picture, lit ten ways: one group of near duplicates
        save_grey(smooth(999) * (0.8 + 0.02 * i) + i, root / "frames" / f"{i}.png")
    # the same picture under a second class, re-encoded (not the same bytes)
    Image.open(root / "cat" / "0.png").save(root / "dog" / "cat-copy.jpg", quality=90)
    (root / "Empty Class").mkdir()
    for form, seeds in (("NFC", range(500, 505)), ("NFD", range(505, 510))):  # one class twice
        for seed in seeds:
            save_grey(smooth(seed), root / unicodedata.normalize(form, "Müsli") / f"{seed}.png")
    for i in range(4):  # broken files: 4 of 55, over split.max_rejected_fraction (5%)
        (root / "owl" / f"broken-{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(i))


def _repro(root, env, stage: str = "split") -> tuple[bool, str]:
    """`dvc repro` up to `stage` (the split, whose messages these are; validate where the
    gate's verdict on what the split did is the point)."""
    try:
        return True, _run(["dvc", "repro", stage], root, env, logs=True)
    except AssertionError as error:
        return False, str(error)


def test_each_message_of_the_split_followed_gets_the_pipeline_past_it(tmp_path):
    source = tmp_path / "images"
    _folder(source)
    root = tmp_path / "project"
    root.mkdir()
    env = make_project(
        root, {"ingest": {"source": str(source)}, "split": {"conflicting_labels": "error"}}
    )

    ok, output = _repro(root, env)  # 1. one class under two spellings
    assert not ok and "spelt two ways; rename or merge them" in output
    nfc, nfd = (source / unicodedata.normalize(form, "Müsli") for form in ("NFC", "NFD"))
    for file in nfd.iterdir():  # as told: merge them
        file.rename(nfc / file.name)
    nfd.rmdir()
    ok, output = _repro(root, env)  # 2. the same picture under two classes
    assert not ok
    assert "dog/cat-copy.jpg (dog): near duplicate of cat/0.png (class 'cat')" in output
    assert "set split.conflicting_labels: exclude" in output
    with edited_params(root, {"split": {"conflicting_labels": "exclude"}}):
        ok, output = _repro(root, env)  # 3. an empty class folder
        assert not ok
        assert "'Empty Class' (no usable image). Add images, or set split.small_classes" in output
        with edited_params(root, {"split": {"small_classes": "drop"}}):  # as told, one way
            ok, output = _repro(root, env)  # 4. too many broken files
            assert not ok and "'Empty Class'" not in output.split("split: error")[-1]
            assert (
                "4 of 55 files (7.3%) are not usable images, more than "
                "split.max_rejected_fraction = 5.0%" in output
            )
            with edited_params(root, {"split": {"max_rejected_fraction": 0.1}}):  # as told
                ok, output = _repro(root, env)  # 5. a class of one picture
                assert not ok
                assert "'frames': 10 images in 1 near-duplicate group(s)" in output
                assert "Set split.inseparable_groups to train_only" in output
                for policy in ("train_only", "split"):  # as told, either way
                    with edited_params(root, {"split": {"inseparable_groups": policy}}):
                        ok, output = _repro(root, env, "validate")
                        assert ok, output
                        assert "all 24 expectations met" in output  # spread: no leak
                        assert f"split.inseparable_groups: {policy}, applied to:" in output
        shutil.rmtree(source / "Empty Class")  # as told, the other way: no such class
        for i in range(4):
            (source / "owl" / f"broken-{i}.png").unlink()  # and no broken files
        with edited_params(root, {"split": {"inseparable_groups": "train_only"}}):
            ok, output = _repro(root, env)
            assert "Running stage 'ingest'" in output  # the folder's removal was seen
            assert ok, output
    rejected = (root / "data/split/rejected.csv").read_text()
    assert "cat/0.png,cat,conflict" in rejected and "dog/cat-copy.jpg,dog,conflict" in rejected

    # 6. the images of a class in validation and test deleted from the source: what is left
    # keeps its split, which no longer gives every split its share
    manifest = pd.read_csv(root / "data/split/manifest.csv", dtype=str, keep_default_na=False)
    owl = manifest[(manifest["label"] == "owl") & manifest["split"].isin(["validation", "test"])]
    for raw_path in owl["raw_path"]:
        (source / raw_path).unlink()
    changes = {"split": {"conflicting_labels": "exclude", "inseparable_groups": "train_only"}}
    with edited_params(root, changes):
        ok, output = _repro(root, env)
        assert not ok
        assert "class(es) whose images keep their last split" in output
        assert "'owl': 7 images in 0 near-duplicate group(s)" in output
        shutil.rmtree(root / "data/split")  # as told
        ok, output = _repro(root, env, "validate")
        assert ok, output
        assert "all 24 expectations met" in output
