"""imagedata.manifest: one writer (the columns in order) and one reader (text, never NaN)."""

import pandas as pd
import pytest

from pipeline.contracts import ContractError
from pipeline.imagedata import manifest as mf


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
