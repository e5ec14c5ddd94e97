"""contracts: each file stages hand each other has one reader and one writer that agree, and
a missing or malformed file is named with the stage that writes it."""

import json

import pytest

from pipeline.contracts import (
    ContractError,
    Labels,
    RunRecord,
    ValidationResult,
    read_labels,
    read_run_record,
    read_validation,
    write_labels,
    write_run_record,
    write_validation,
)


def test_each_writer_and_reader_agree(tmp_path):
    labels = Labels(["cat", "Müsli", "狗"], (0, 128, 255))
    write_labels(tmp_path / "labels.json", labels)
    assert read_labels(tmp_path / "labels.json") == labels
    record = RunRecord("abc", "1")
    write_run_record(tmp_path / "run.json", record)
    assert read_run_record(tmp_path / "run.json") == record
    result = ValidationResult(False, 23, 1, 30, 2, [{"expectation": "x", "success": False}])
    write_validation(tmp_path / "validation.json", result)
    assert read_validation(tmp_path / "validation.json") == result
    assert result.tags()["validation.status"] == "failed"


def test_labels_written_before_the_background_was_recorded_mean_white(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps({"classes": ["a", "b"]}))
    assert read_labels(tmp_path / "labels.json") == Labels(["a", "b"], (255, 255, 255))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, r"labels\.json is missing: run `dvc repro split`"),
        ("{not json", r"labels\.json is not valid JSON .*: run `dvc repro split`"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"classes": "cat"}', "'classes' is missing or not a list"),
        ('{"classes": ["a", 2]}', "every class name must be a string"),
        ('{"classes": ["a"], "background": [0, 0]}', "'background' must be three values 0-255"),
    ],
)
def test_a_bad_labels_file_is_named(tmp_path, text, message):
    path = tmp_path / "labels.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ContractError, match=message):
        read_labels(path)


def test_a_missing_run_record_says_to_train(tmp_path):
    with pytest.raises(ContractError, match=r"mlflow_run\.json is missing: run `dvc repro train`"):
        read_run_record(tmp_path / "mlflow_run.json")
    (tmp_path / "mlflow_run.json").write_text('{"run_id": 5, "experiment_id": "1"}')
    with pytest.raises(ContractError, match="'run_id' is missing or not a str"):
        read_run_record(tmp_path / "mlflow_run.json")


def test_failed_names_leave_out_the_expectations_only_reported():
    from pipeline.contracts import ValidationResult

    outcomes = [
        {"table": "near_duplicates", "kwargs": {"column": "confirmed"}, "success": False},
        {"table": "class_balance", "kwargs": {"column": "count"}, "success": False},
        {"table": "images", "kwargs": {"column": "decodes"}, "success": True},
    ]
    result = ValidationResult(False, 3, 1, 10, 2, outcomes, reported=["class_balance.count"])
    assert result.failed_names() == ["near_duplicates.confirmed"]
