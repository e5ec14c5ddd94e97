import pandas as pd
import pytest

from pipeline.imagedata import manifest as mf
from pipeline.imagedata.assignment import SplitSetup, build_split, previous_assignments, write_split
from pipeline.imagedata.relabels import (
    RelabelError,
    apply_relabels,
    read_relabels,
    summary,
)
from pipeline.params import load_params


def _fixes(tmp_path, text: str):
    path = tmp_path / "relabels.csv"
    path.write_text(text)
    return read_relabels(path)


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "raw_path": ["cat/0.png", "cat/1.png", "dog/0.png", "dog/1.png"],
            "label": ["cat", "cat", "dog", "dog"],
            "status": [mf.OK, mf.OK, mf.OK, mf.REJECTED],
            "reason": ["", "", "", "not an image"],
            "sha256": ["a", "b", "c", "d"],
        }
    )


def test_a_missing_file_means_no_fixes(tmp_path):
    assert read_relabels(tmp_path / "relabels.csv").empty


def test_rows_are_read_stripped_with_quoted_reasons(tmp_path):
    fixes = _fixes(tmp_path, 'path,label,reason\n cat/0.png , dog ,"looks like a dog, p=0.9"\n')
    assert fixes.to_dict("records") == [
        {"path": "cat/0.png", "label": "dog", "reason": "looks like a dog, p=0.9"}
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,label\ncat/0.png,dog\n", r"lacks the column\(s\) path, reason: its header must be"),
        ("path,label,reason\ncat/0.png,,x\n", r"line\(s\) 2 lack a path or a label"),
        (
            "path,label,reason\ncat/0.png,dog,x\ncat/1.png,dog,\ncat/0.png,drop,y\n",
            r"names a file more than once:\n  cat/0.png \(line 2\)\n  cat/0.png \(line 4\)",
        ),
    ],
)
def test_a_malformed_file_is_named_with_its_lines(tmp_path, text, message):
    with pytest.raises(RelabelError, match=message):
        _fixes(tmp_path, text)


def test_a_relabel_moves_the_class_and_remembers_the_old_one(tmp_path):
    fixes = _fixes(tmp_path, "path,label,reason\ncat/0.png,dog,audit\ndog/0.png,drop,blurred\n")
    table = apply_relabels(_table(), fixes, "data/relabels.csv")
    assert table["label"].tolist() == ["dog", "cat", "dog", "dog"]
    assert table["relabelled_from"].tolist() == ["cat", "", "", ""]
    assert table.loc[2, "status"] == mf.EXCLUDED
    assert table.loc[2, "reason"] == "data/relabels.csv: drop (blurred)"
    assert summary(table, fixes, "f00") == {
        "sha256": "f00",
        "rows": 2,
        "relabelled": 1,
        "dropped": 1,
    }


def test_dropping_a_rejected_file_keeps_it_rejected(tmp_path):
    fixes = _fixes(tmp_path, "path,label,reason\ndog/1.png,drop,\n")
    table = apply_relabels(_table(), fixes, "data/relabels.csv")
    assert table.loc[3, "status"] == mf.REJECTED


def test_a_fix_for_a_file_data_raw_lacks_is_named(tmp_path):
    fixes = _fixes(tmp_path, "path,label,reason\ncat/9.png,dog,\n")
    with pytest.raises(
        RelabelError,
        match=r"names 1 file\(s\) that data/raw does not have .*"
        r"e\.g\. cat/0\.png\):\n  cat/9\.png",
    ):
        apply_relabels(_table(), fixes, "data/relabels.csv")


def test_a_label_that_is_no_class_is_named_with_the_classes(tmp_path):
    fixes = _fixes(tmp_path, "path,label,reason\ncat/0.png,Dog,\n")
    with pytest.raises(RelabelError, match=r"its classes: cat, dog; .*\n  cat/0\.png -> 'Dog'"):
        apply_relabels(_table(), fixes, "data/relabels.csv")


def test_the_split_places_a_relabelled_image_under_its_new_class_in_the_same_split(
    image_tree, tmp_path
):
    cfg = load_params().split.model_copy(update={"validation": 0.2, "test": 0.2})
    first = build_split(image_tree, SplitSetup(cfg, 0, 1), previous={})
    out = tmp_path / "split"
    write_split(first, image_tree, out, SplitSetup(cfg, 0, 1))
    before = first.set_index("raw_path")["split"]
    fixes = _fixes(tmp_path, "path,label,reason\ncat/3.png,owl,audit\ndog/5.png,drop,junk\n")

    previous = previous_assignments(out, 0, cfg.fractions)
    table = build_split(
        image_tree,
        SplitSetup(cfg, 0, 1),
        previous,
        relabels=fixes,
        relabels_source="data/relabels.csv",
    )
    out = tmp_path / "split again"  # as the stage does: a new folder, swapped in at the end
    write_split(table, image_tree, out, SplitSetup(cfg, 0, 1), relabels={"rows": 2})
    row = table.set_index("raw_path").loc["cat/3.png"]
    assert (row["label"], row["relabelled_from"]) == ("owl", "cat")
    assert row["split"] == before["cat/3.png"]  # the fix changed the class, not the split
    assert row["path"] == f"{row['split']}/owl/3.png"
    assert (out / row["path"]).exists()
    rejected = pd.read_csv(out / "rejected.csv", dtype=str)
    assert rejected.set_index("raw_path").loc["dog/5.png", "status"] == mf.EXCLUDED
    manifest = mf.read_manifest(out / "manifest.csv")
    assert manifest["relabelled_from"].tolist().count("cat") == 1
    assert mf.raw_labels(manifest).value_counts().to_dict() == {"cat": 10, "dog": 10, "owl": 10}
    summary_table = pd.read_csv(out / "summary.csv").set_index("class")
    assert summary_table.loc["dog", mf.EXCLUDED] == 1
