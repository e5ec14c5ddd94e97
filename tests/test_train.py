"""Stage `train` as a whole: a bad param or a missing input is one message, no traceback."""

from tests.projects import stage_error


def test_a_misspelt_param_is_named_without_a_traceback(tmp_path):
    """`train.epochz: 30` for `epochs`: the key named, exit 1, no traceback."""
    stderr = stage_error(tmp_path, "train", {"train": {"epochz": 30}})
    assert stderr == (
        f"train: error: {tmp_path / 'params.yaml'} has bad values:\n"
        "  train.epochz: Extra inputs are not permitted\n"
    )


def test_without_a_split_the_stage_says_to_run_it(tmp_path):
    stderr = stage_error(tmp_path, "train")
    assert stderr.endswith(
        f"train: error: {tmp_path / 'data/split/manifest.csv'} is missing: run `dvc repro split`\n"
    )
