"""imagedata.manifest: one writer (the columns in order) and one reader (text, never NaN)."""

import pandas as pd
import pytest

from pipeline.contracts import ContractError
from pipeline.imagedata import manifest as mf
from pipeline.imagedata.images import RAW_COLUMNS, list_raw, write_raw_listing


def test_written_in_column_order_and_read_back_as_text(tmp_path):
    row = {column: "" for column in mf.COLUMNS} | {"path": "train/a/1.png", "width": 8}
    table = pd.DataFrame([dict(reversed(list(row.items())))])
    mf.write_manifest(table, tmp_path / "manifest.csv")
    read = mf.read_manifest(tmp_path / "manifest.csv")
    assert list(read.columns) == mf.COLUMNS
    assert read.loc[0, "width"] == "8" and read.loc[0, "reason"] == ""


def test_a_missing_manifest_says_which_stage_writes_it(tmp_path):
    with pytest.raises(ContractError, match=r"manifest\.csv is missing: run `dvc repro split`"):
        mf.read_manifest(tmp_path / "manifest.csv")


def test_the_raw_listing_reads_back_as_list_raw_gave_it(tmp_path):
    for name in ("train/cat/a.png", "train/cat/b.png", "test/dog/c.png", "test/.DS_Store"):
        (tmp_path / "raw" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "raw" / name).write_bytes(b"x")
    listed = list_raw(tmp_path / "raw")
    write_raw_listing(listed, tmp_path / "raw_listing.csv")
    read = mf.read_raw_listing(tmp_path / "raw_listing.csv")
    assert list(read.columns) == RAW_COLUMNS
    expected = listed.reindex(columns=RAW_COLUMNS).fillna("").astype(str)
    pd.testing.assert_frame_equal(read, expected)
    assert set(read["given_split"]) == {"train", "test"}
    assert set(read["problem"]) == {"", "ignored: hidden file or OS debris"}
    with pytest.raises(ContractError, match=r"raw_listing\.csv is missing: run `dvc repro ingest`"):
        mf.read_raw_listing(tmp_path / "gone" / "raw_listing.csv")
