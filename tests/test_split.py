"""Stage `split` as a whole: an expected failure is one message naming what to do."""

from tests.projects import stage_error


def test_without_ingest_s_output_the_stage_says_which_file_and_stage(tmp_path):
    stderr = stage_error(tmp_path, "split")
    assert stderr == (
        f"split: error: {tmp_path / 'data/raw_listing.csv'} is missing: run `dvc repro ingest`\n"
    )


def test_without_the_raw_folder_the_stage_says_which_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw_listing.csv").write_text("path,label,problem,given_split\n")
    stderr = stage_error(tmp_path, "split")
    assert stderr == f"split: error: image folder not found: {tmp_path / 'data/raw'}\n"
