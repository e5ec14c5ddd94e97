"""Stage `audit` as a whole: missing inputs are named with the stage that makes them."""

import json

from tests.projects import stage_error


def test_without_a_split_the_stage_says_to_run_it(tmp_path):
    stderr = stage_error(tmp_path, "audit")
    assert stderr == (
        f"audit: error: {tmp_path / 'data/split/labels.json'} is missing: run `dvc repro split`\n"
    )


def test_without_a_manifest_the_stage_names_it(tmp_path):
    (tmp_path / "data/split").mkdir(parents=True)
    (tmp_path / "data/split/labels.json").write_text(json.dumps({"classes": ["a", "b"]}))
    stderr = stage_error(tmp_path, "audit")
    assert stderr == (
        f"audit: error: {tmp_path / 'data/split/manifest.csv'} is missing: run `dvc repro split`\n"
    )
