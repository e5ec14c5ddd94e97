"""Stage `visualize` as a whole: missing inputs are named with the stage that makes them."""

from tests.projects import stage_error


def test_without_a_split_the_stage_says_to_run_it(tmp_path):
    stderr = stage_error(tmp_path, "visualize")
    assert stderr == (
        f"visualize: error: {tmp_path / 'data/split/labels.json'} is missing: "
        "run `dvc repro split`\n"
    )
