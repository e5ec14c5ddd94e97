"""The end-to-end tests' shared projects, and the helpers that let a test change one and put
it back, so that no test depends on which ran before it.

Each project below is built once per test session and shared by every test (and file) that
asks for it; a test that changes one restores what it changed: `edited_params` for
params.yaml, the `restore` fixture (or `restored`) for any other file, folder or SQLite
database (the MLflow store). The data stages come from `prepared` (tests/conftest.py).
"""

import filecmp
import json
import os
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path

import pytest
import yaml

from tests.conftest import SHRUNK, _merge
from tests.projects import make_project
from tests.projects import run as _run

SQLITE_HEADER = b"SQLite format 3\x00"
# the sections of a DVC stage whose entries are files the stage writes
OUTPUT_SECTIONS = ("outs", "metrics", "plots")


def declared_outputs(dvc_yaml: Path) -> list[str]:
    """Every path the stages of `dvc_yaml` declare they write (`outs`, `metrics` and a
    stage's own `plots`), in file order. An entry is a path, or a one-key mapping of the
    path to its options (`data/split: {persist: true}`)."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    paths = []
    for stage in stages.values():
        for section in OUTPUT_SECTIONS:
            for entry in stage.get(section) or []:
                if isinstance(entry, str):
                    paths.append(entry)
                else:
                    [path] = entry
                    paths.append(path)
    return paths


@contextmanager
def edited_params(root: Path, changes: dict) -> Iterator[dict]:
    """`root`'s params.yaml with `changes` merged in (nested, as `SHRUNK` is; a list or a
    plain value replaces the old one); yields the params so written. On exit, even when the
    body raises, the file holds the very bytes it held before."""
    path = root / "params.yaml"
    before = path.read_bytes()
    params = _merge(yaml.safe_load(before), changes)
    try:
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        yield params
    finally:
        path.write_bytes(before)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(len(SQLITE_HEADER)) == SQLITE_HEADER


def _copy_database(source: Path, target: Path) -> None:
    """`target` given `source`'s content by SQLite's backup: in place, so connections open on
    `target` see the new content on their next read."""
    with closing(sqlite3.connect(source)) as reader, closing(sqlite3.connect(target)) as writer:
        reader.backup(writer)


def _put_back_file(saved: Path, path: Path) -> None:
    if saved.is_symlink():
        if not path.is_symlink() or os.readlink(path) != os.readlink(saved):
            _remove(path)
            path.symlink_to(os.readlink(saved))
        return
    if path.is_symlink() or path.is_dir():
        _remove(path)
    if path.exists() and filecmp.cmp(saved, path, shallow=False):
        return  # unchanged: left alone, so DVC's record of it stays valid
    if path.exists():
        path.unlink()  # DVC's cache files are read-only
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(saved, path, follow_symlinks=False)


def _put_back_tree(saved: Path, path: Path) -> None:
    """`path` made equal to the folder `saved`: what the test added removed, what it changed
    or removed copied back, what it left alone untouched."""
    if path.is_symlink() or not path.is_dir():
        _remove(path)
        shutil.copytree(saved, path, symlinks=True)
        return
    for current in path.iterdir():
        if not (saved / current.name).exists() and not (saved / current.name).is_symlink():
            _remove(current)
    for kept in saved.iterdir():
        if kept.is_dir() and not kept.is_symlink():
            _put_back_tree(kept, path / kept.name)
        else:
            _put_back_file(kept, path / kept.name)


@contextmanager
def restored(*paths: Path) -> Iterator[None]:
    """On exit, even when the body raises, each of `paths` as it was on entry: a file's bytes,
    a folder's whole tree, and a path that did not exist removed. An SQLite database (the
    MLflow store) is saved and written back through SQLite's backup, in place, so that the
    connections this process holds on it stay valid and read the restored content."""
    saved = Path(tempfile.mkdtemp(prefix="e2e-restored-"))
    kept: list[tuple[Path, Path | None, bool]] = []
    try:
        for index, path in enumerate(paths):
            copy = saved / str(index)
            if path.is_dir() and not path.is_symlink():
                shutil.copytree(path, copy, symlinks=True)
                kept.append((path, copy, False))
            elif path.is_file() and not path.is_symlink() and _is_sqlite(path):
                _copy_database(path, copy)
                kept.append((path, copy, True))
            elif path.exists() or path.is_symlink():
                shutil.copy2(path, copy, follow_symlinks=False)
                kept.append((path, copy, False))
            else:
                kept.append((path, None, False))
        yield
    finally:
        try:
            for path, copy, database in reversed(kept):
                if copy is None:
                    _remove(path)
                elif database:
                    _copy_database(copy, path)
                elif copy.is_dir() and not copy.is_symlink():
                    _put_back_tree(copy, path)
                else:
                    _put_back_file(copy, path)
        finally:
            shutil.rmtree(saved, ignore_errors=True)


@pytest.fixture
def restore() -> Iterator[Callable[..., None]]:
    """`restore(*paths)`: each path put back after the test (passed or failed) as it was when
    `restore` was called; see `restored`."""
    with ExitStack() as stack:
        yield lambda *paths: stack.enter_context(restored(*paths))


@contextmanager
def process_state_kept() -> Iterator[None]:
    """On exit, this process's MLflow tracking URI (MLflow's global, which
    `mlflow.set_tracking_uri` and `store.configure` set, and MLFLOW_TRACKING_URI, which they
    export) and `sys.path` (a pyfunc model's code path is put first on loading) as on entry."""
    path = list(sys.path)
    variable = os.environ.get("MLFLOW_TRACKING_URI")
    tracking = sys.modules.get("mlflow.tracking._tracking_service.utils")
    uri = getattr(tracking, "_tracking_uri", None)  # None until mlflow is imported and set
    try:
        yield
    finally:
        tracking = sys.modules.get("mlflow.tracking._tracking_service.utils")
        if tracking is not None and getattr(tracking, "_tracking_uri", None) != uri:
            tracking.set_tracking_uri(uri)
        if variable is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = variable
        sys.path[:] = path


@pytest.fixture(autouse=True)
def _process_state_left_as_found() -> Iterator[None]:
    """Set up before any fixture a test asks for (monkeypatch too), so undone after them."""
    with process_state_kept():
        yield


# the shrunk model after two epochs is near chance (test accuracy about 0.11 on the digits),
# where int8 quantisation flips near-tied answers: its accuracy drop judges noise (1.1 points
# once the deployed model averaged five test-time views). The rule itself is tested in
# tests/evaluation/test_parity.py; int8 on trained models in tests/serving/test_formats.py
# and by every `make run` (the digits: full agreement; Fashion-MNIST: -0.02 points)
NEAR_CHANCE_INT8 = {"export": {"int8_max_accuracy_drop": 0.05}}


@pytest.fixture(scope="session")
def project(
    tmp_path_factory: pytest.TempPathFactory, prepared: Path
) -> tuple[Path, dict[str, str]]:
    """The project with shrunk params, after a full `dvc repro` (the data stages skipped:
    `prepared` ran them with the same params)."""
    root = tmp_path_factory.mktemp("project")
    env = make_project(root, _merge(SHRUNK, NEAR_CHANCE_INT8), prepared)
    output = _run(["dvc", "repro"], root, env)
    assert "Stage 'validate' didn't change, skipping" in output
    return root, env


@pytest.fixture(scope="session")
def validated(
    tmp_path_factory: pytest.TempPathFactory, prepared: Path
) -> tuple[Path, dict[str, str]]:
    """A project with shrunk params (six epochs, no early stop), run up to `validate`."""
    root = tmp_path_factory.mktemp("trainable")
    overrides = _merge(SHRUNK, {"train": {"epochs": 6, "early_stopping": {"patience": 10}}})
    env = make_project(root, overrides, prepared)
    _run(["dvc", "repro", "validate"], root, env)
    return root, env


@pytest.fixture(scope="session")
def trained(validated: tuple[Path, dict[str, str]], tmp_path_factory) -> tuple[Path, dict]:
    """`validated` trained once, uninterrupted: a copy of its model and its metrics."""
    root, env = validated
    _run([sys.executable, "-m", "pipeline.train"], root, env)
    keep = tmp_path_factory.mktemp("trained") / "model.keras"
    shutil.copy(root / "models/model.keras", keep)
    return keep, json.loads((root / "reports/train/metrics.json").read_text())
