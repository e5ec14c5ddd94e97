"""Stage `train` as a whole: a bad param or a missing input is one message, no traceback."""

from tests.projects import stage_error


def test_a_misspelt_param_is_named_without_a_traceback(tmp_path):
    """`train.epochz: 30` for `epochs`: the key named, exit 1, no traceback."""
    stderr = stage_error(tmp_path, "train", {"train": {"epochz": 30}})
    assert stderr == (
        f"train: error: {tmp_path / 'params.yaml'} has bad values:\n"
        "  train.epochz: Extra inputs are not permitted\n"
    )


def test_without_a_checked_split_the_stage_says_to_run_the_gate(tmp_path):
    stderr = stage_error(tmp_path, "train")
    assert stderr.endswith(
        f"train: error: {tmp_path / 'reports/validate/validation.json'} is missing: run "
        "`dvc repro validate`\n"
    )


def _failed_gate(root):
    from pipeline.contracts import ValidationResult, write_validation

    outcome = {"table": "near_duplicates", "kwargs": {"column": "distance"}, "success": False}
    path = root / "reports" / "validate" / "validation.json"
    path.parent.mkdir(parents=True)
    write_validation(path, ValidationResult(False, 24, 1, 100, 9, [outcome]))


def test_train_refuses_a_split_that_failed_the_data_gate(tmp_path):
    """`dvc repro -s train` after a failed validate: train stops before anything else, naming
    the unmet expectation and the param that overrides it."""
    _failed_gate(tmp_path)
    stderr = stage_error(tmp_path, "train")
    assert stderr.endswith(
        "train: error: the split failed the data gate (1 of 24 expectations unmet: "
        "near_duplicates.distance; reports/validate/validation.json): fix the data and run "
        "`dvc repro validate`, or set train.allow_failed_validation: true to train anyway\n"
    )


def test_the_gate_override_lets_train_go_on_and_says_so(tmp_path):
    _failed_gate(tmp_path)
    stderr = stage_error(tmp_path, "train", {"train": {"allow_failed_validation": True}})
    assert "training on a split that failed the data gate (1 of 24 expectations unmet" in stderr
    assert stderr.endswith("is missing: run `dvc repro split`\n")  # past the gate
