"""The end-to-end tests' own helpers (tests/e2e/conftest.py), which put shared projects back:
fast, no pipeline run."""

import os
import sqlite3
import sys
import tempfile
from contextlib import closing
from pathlib import Path

import pytest
import yaml

from pipeline.paths import ROOT
from tests.e2e.conftest import declared_outputs, edited_params, process_state_kept, restored

# comments, spacing and key order that yaml.safe_dump would not write back
PARAMS = (
    b"# the project's params\n"
    b"base:\n"
    b"  seed:   42   # spaced\n"
    b"train:\n"
    b"  epochs: 2\n"
    b"  transfer: {base: none, phases: []}\n"
    b"  model:\n"
    b"    filters: [4, 8]\n"
)


class Boom(Exception):
    pass


def test_edited_params_restores_the_exact_bytes_even_when_the_body_raises(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_bytes(PARAMS)
    changes = {"train": {"epochs": 1, "transfer": {"phases": [{"epochs": 3}]}}}
    with pytest.raises(Boom), edited_params(tmp_path, changes) as params:
        assert yaml.safe_load(path.read_text()) == params
        assert params["train"]["epochs"] == 1 and params["base"]["seed"] == 42
        assert params["train"]["transfer"] == {"base": "none", "phases": [{"epochs": 3}]}
        assert params["train"]["model"] == {"filters": [4, 8]}  # untouched sections kept
        raise Boom
    assert path.read_bytes() == PARAMS


def test_edited_params_restores_the_exact_bytes_after_a_normal_exit(tmp_path: Path):
    path = tmp_path / "params.yaml"
    path.write_bytes(PARAMS)
    with edited_params(tmp_path, {"base": {"seed": 7}}):
        assert path.read_bytes() != PARAMS
    assert path.read_bytes() == PARAMS


def test_declared_outputs_are_every_outs_and_metrics_path_of_the_project_dvc_yaml():
    declared = declared_outputs(ROOT / "dvc.yaml")
    assert {
        "data/raw",
        "data/split",  # {"data/split": {"persist": true}}
        "reports/validate/data_docs",
        "models/model.keras",
        "reports/train/metrics.json",  # a metric, {"...": {"cache": false}}
        "reports/evaluate/metrics.json",
        "reports/visualize/pictures",
    } <= set(declared)
    assert all(isinstance(path, str) for path in declared)
    assert not [path for path in declared if path.startswith("pipeline/")]  # deps are not
    assert len(declared) == len(set(declared))


def test_declared_outputs_take_both_forms_of_an_entry(tmp_path: Path):
    dvc_yaml = tmp_path / "dvc.yaml"
    dvc_yaml.write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "first": {
                        "cmd": "true",
                        "deps": ["in.txt"],
                        "outs": ["a", {"b": {"persist": True}}],
                    },
                    "second": {"cmd": "true"},  # writes nothing it declares
                    "third": {
                        "cmd": "true",
                        "metrics": [{"m.json": {"cache": False}}],
                        "plots": ["p.csv"],
                    },
                },
                "plots": ["p.csv", {"Loss": {"y": {"p.csv": "loss"}}}],  # views, not outputs
            }
        )
    )
    assert declared_outputs(dvc_yaml) == ["a", "b", "m.json", "p.csv"]


def test_restored_puts_back_files_and_folders_and_removes_what_was_not_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    saved = tmp_path / "tmp"
    saved.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(saved))
    file = tmp_path / "params.yaml"
    file.write_bytes(PARAMS)
    folder = tmp_path / "cache"
    (folder / "ab").mkdir(parents=True)
    (folder / "ab" / "kept").write_text("kept")
    (folder / "ab" / "changed").write_text("before")
    (folder / "ab" / "deleted").write_text("deleted")
    (folder / "read_only").write_text("read-only, as DVC's cache files are")
    (folder / "read_only").chmod(0o444)
    kept_inode = (folder / "ab" / "kept").stat().st_ino
    absent = tmp_path / "plots"

    with pytest.raises(Boom), restored(file, folder, absent):
        file.write_text("edited")
        (folder / "ab" / "changed").write_text("after")
        (folder / "ab" / "deleted").unlink()
        (folder / "read_only").unlink()
        (folder / "read_only").write_text("replaced")
        (folder / "cd" / "ef").mkdir(parents=True)
        (folder / "cd" / "ef" / "added").write_text("added")
        (absent / "index.html").parent.mkdir()
        (absent / "index.html").write_text("<html>")
        raise Boom

    assert file.read_bytes() == PARAMS
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "ab",
        "ab/changed",
        "ab/deleted",
        "ab/kept",
        "read_only",
    ]
    assert (folder / "ab" / "changed").read_text() == "before"
    assert (folder / "ab" / "deleted").read_text() == "deleted"
    assert (folder / "read_only").read_text() == "read-only, as DVC's cache files are"
    assert (folder / "ab" / "kept").stat().st_ino == kept_inode  # what was not changed: as is
    assert not absent.exists()
    assert list(saved.iterdir()) == []  # the copies it kept are gone


def test_restored_puts_an_sqlite_store_back_in_place_for_open_connections(tmp_path: Path):
    database = tmp_path / "mlflow.db"
    with closing(sqlite3.connect(database)) as setup:
        setup.execute("create table runs (id text)")
        setup.execute("insert into runs values ('original')")
        setup.commit()
    inode = database.stat().st_ino
    with closing(sqlite3.connect(database)) as held:  # as the tests' MlflowClient holds one
        assert held.execute("select id from runs").fetchall() == [("original",)]
        with pytest.raises(Boom), restored(database):
            with closing(sqlite3.connect(database)) as other:  # another process's run
                other.execute("insert into runs values ('reproduction')")
                other.commit()
            assert len(held.execute("select id from runs").fetchall()) == 2
            raise Boom
        assert held.execute("select id from runs").fetchall() == [("original",)]
    assert database.stat().st_ino == inode


def test_process_state_kept_restores_the_tracking_uri_and_sys_path(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before_uri, before_path = mlflow.get_tracking_uri(), list(sys.path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with process_state_kept():
        mlflow.set_tracking_uri(store)  # which also exports MLFLOW_TRACKING_URI
        sys.path.insert(0, str(tmp_path / "model" / "code"))  # as loading a pyfunc model does
        assert os.environ["MLFLOW_TRACKING_URI"] == store
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert mlflow.get_tracking_uri() == before_uri != store
    assert sys.path == before_path
