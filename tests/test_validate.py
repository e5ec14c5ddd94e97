import json

import pandas as pd
import pytest
import yaml

from pipeline import manifest as mf
from pipeline import validate
from pipeline.files import write_json
from pipeline.params import load_params
from pipeline.validate import expectation_tables, run_suites
from tests.conftest import split_table, write_png

FRACTIONS = {"train": 0.6, "validation": 0.2, "test": 0.2}


@pytest.fixture
def manifest(image_tree) -> pd.DataFrame:
    return mf.in_splits(split_table(image_tree).reindex(columns=mf.COLUMNS))


def _failures(
    manifest: pd.DataFrame, classes: list[str], fractions: dict = FRACTIONS, **kwargs
) -> list[dict]:
    options = {"min_images": 1, "tolerance": 0.05} | kwargs
    outcomes = run_suites(expectation_tables(manifest, classes, fractions, **options))
    return [o for o in outcomes if not o["success"]]


def test_a_clean_split_meets_every_expectation(manifest):
    assert _failures(manifest, ["cat", "dog", "owl"]) == []


def test_class_missing_from_a_split_fails(manifest):
    dropped = manifest[~((manifest["label"] == "owl") & (manifest["split"] == "test"))]
    failures = _failures(dropped, ["cat", "dog", "owl"], tolerance=0.5)
    assert [(f["table"], f["unexpected_count"]) for f in failures] == [("class_split_counts", 1)]


def test_same_content_in_two_splits_fails(manifest):
    leaked = manifest.copy()
    train_row = leaked.index[leaked["split"] == "train"][0]
    test_row = leaked.index[leaked["split"] == "test"][0]
    leaked.loc[test_row, "sha256"] = leaked.loc[train_row, "sha256"]
    failures = _failures(leaked, ["cat", "dog", "owl"])
    assert [(f["table"], f["unexpected_count"]) for f in failures] == [("content_leakage", 1)]


def test_file_in_two_splits_fails(manifest):
    duplicated = pd.concat([manifest, manifest.iloc[[0]].assign(split="test")])
    failures = {
        f["table"] + ":" + f["expectation"] for f in _failures(duplicated, ["cat", "dog", "owl"])
    }
    assert "manifest:expect_column_values_to_be_unique" in failures
    assert "content_leakage:expect_column_values_to_be_between" in failures


def test_fractions_outside_tolerance_fail(manifest):
    configured = {"train": 0.8, "validation": 0.1, "test": 0.1}  # the split used 0.6/0.2/0.2
    failures = _failures(manifest, ["cat", "dog", "owl"], fractions=configured)
    assert [(f["table"], f["unexpected_count"]) for f in failures] == [("split_fractions", 3)]


def test_labels_file_must_match_the_manifest(manifest):
    failures = _failures(manifest, ["cat", "dog", "owl", "yak"])
    assert {f["expectation"] for f in failures} == {
        "expect_column_distinct_values_to_equal_set",
        "expect_column_values_to_be_between",  # yak has no images in any split
    }


def test_a_failed_expectation_stops_the_stage(manifest, tmp_path, monkeypatch, raw_params):
    broken = manifest[~((manifest["label"] == "owl") & (manifest["split"] == "test"))]
    broken.to_csv(tmp_path / "manifest.csv", index=False)
    write_json(tmp_path / "labels.json", {"classes": ["cat", "dog", "owl"]})
    raw_params["validate"]["fraction_tolerance"] = 0.5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params))
    monkeypatch.setattr(validate, "load_params", lambda: load_params(tmp_path / "params.yaml"))
    monkeypatch.setattr(validate, "SPLIT_MANIFEST", tmp_path / "manifest.csv")
    monkeypatch.setattr(validate, "LABELS_FILE", tmp_path / "labels.json")
    monkeypatch.setattr(validate, "VALIDATION_FILE", tmp_path / "reports" / "validation.json")
    monkeypatch.setattr(validate, "ROOT", tmp_path)
    with pytest.raises(SystemExit) as stop:
        validate.main()
    assert str(stop.value).startswith(
        "validate: 1 of 13 expectations failed (details in reports/validation.json):\n"
        "  class_split_counts: expect_column_values_to_be_between {'column': 'count', "
        "'min_value': 1"
    )
    report = json.loads((tmp_path / "reports" / "validation.json").read_text())
    assert report["success"] is False and report["failed"] == 1


def test_a_train_only_class_is_expected_in_train_only(image_tree):
    write_png(image_tree / "tiny" / "a.png", 901)
    manifest = split_table(image_tree, small_classes="train_only").reindex(columns=mf.COLUMNS)
    assert _failures(mf.in_splits(manifest), ["cat", "dog", "owl", "tiny"], tolerance=0.1) == []
