"""Shared fixtures: the real params shrunk to test size, and tiny real image folders."""

import copy
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.params import load_raw_params

# Small enough to train in seconds on two CPU cores, yet the real code path end to end.
SHRUNK = {
    "base": {"image_size": 16},
    "train": {
        "epochs": 2,
        "batch_size": 32,
        "model": {"filters": [4, 8], "convs_per_block": 1, "kernel_size": 3, "dense_units": [16]},
        "early_stopping": {"patience": 2},
    },
    "audit": {
        "folds": 3,
        "epochs": 2,
        "filters": [4, 8],
        "image_checks": ["dark", "blurry", "exact_duplicates", "near_duplicates"],
    },
}


# For the tests of recording and running pipelines (the tracking server, sweeps): the shrunk
# model after an epoch or two is near chance (test accuracy about 0.11 on the digits), where
# int8 quantisation flips near-tied answers and `export.int8_max_accuracy_drop` judges noise
# (7 of 268 test images flipped after a change of split). The int8 parity is checked on
# trained models in tests/serving/test_formats.py and by every `make run`.
FLOAT_EXPORTS = {"export": {"formats": ["onnx", "tflite", "saved_model"]}}


def _merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict):
            merged[key] = _merge(merged.get(key, {}), value)
        else:
            merged[key] = value
    return merged


@pytest.fixture
def raw_params() -> dict:
    """The project's params.yaml as plain data (a fresh copy per test)."""
    return load_raw_params()


@pytest.fixture
def shrunk_params(raw_params: dict) -> dict:
    return _merge(raw_params, SHRUNK)


def write_png(path: Path, value: int, size: int = 8, mode: str = "L") -> Path:
    """A small real PNG whose pixels encode `value`, so distinct values give distinct files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    pixels = rng.integers(0, 256, size=(size, size), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path, format="PNG")
    return path


def smooth(seed: int, size: int = 48) -> np.ndarray:
    """A photo-like grey image as floats (smooth random shapes, not noise): distinct seeds,
    distinct pictures; scaled or shifted values, the same picture re-lit."""
    coarse = np.random.default_rng(seed).random((6, 6)) * 255
    image = Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.float64)


def save_grey(pixels: np.ndarray, path: Path) -> Path:
    """`pixels` clipped to 0..255 as a grey PNG (or JPEG, by the suffix) at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """`root/<class>/<n>.png`: three classes of ten distinct images each."""
    root = tmp_path / "images"
    for c, name in enumerate(["cat", "dog", "owl"]):
        for i in range(10):
            write_png(root / name / f"{i}.png", value=100 * c + i)
    return root


def split_table(root: Path, seed: int = 0, **changes: object):
    """The split stage's table for `root` (20% validation, 20% test unless changed)."""
    from pipeline.imagedata.assignment import SplitSetup, build_split
    from pipeline.params import load_params

    cfg = load_params().split.model_copy(update={"validation": 0.2, "test": 0.2, **changes})
    return build_split(root, SplitSetup(cfg, seed, 3), previous={})


@pytest.fixture
def split(image_tree, tmp_path) -> dict:
    """A real split of the three-class tree, written to disk, and everything validate reads."""
    from pipeline.imagedata import manifest as mf
    from pipeline.imagedata.assignment import SplitSetup, build_split, write_split
    from pipeline.imagedata.checks import confirm_near_duplicates, image_facts
    from pipeline.imagedata.images import Rules, list_raw
    from pipeline.params import load_params

    cfg = load_params().split.model_copy(update={"validation": 0.2, "test": 0.2})
    table = build_split(image_tree, SplitSetup(cfg, 0, 1), previous={})
    out = tmp_path / "split"
    write_split(table, image_tree, out, SplitSetup(cfg, 0, 1))
    manifest = mf.read_manifest(out / "manifest.csv")
    placed = mf.in_splits(manifest)
    facts = image_facts(out, placed["path"].tolist(), channels=1, rules=Rules.of(cfg))
    return {
        "manifest": manifest,
        "raw": list_raw(image_tree),
        "facts": facts,
        "near": confirm_near_duplicates(out, placed, facts, cfg),
        "classes": ["cat", "dog", "owl"],
        "out": out,
        "root": image_tree,
    }


# Tests that share a session fixture which trains run in one worker under pytest-xdist (`make
# test` runs two, `--dist loadgroup`), so that fixture is built once, not once per worker.
SHARED_PROJECTS = {"project": "project", "validated": "trained", "trained": "trained"}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        groups = {SHARED_PROJECTS[name] for name in item.fixturenames if name in SHARED_PROJECTS}
        for group in sorted(groups):
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with SHRUNK params after `dvc repro validate`: the data stages' outputs, lock
    and cache, for `make_project(..., prepared=...)` to start from (which only reads it).

    Under pytest-xdist the workers share one: the first to need it builds it, under a file
    lock, in the folder all workers of this run have in common."""
    from filelock import FileLock

    from tests.projects import make_project, run

    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        root = tmp_path_factory.mktemp("prepared")
        run(["dvc", "repro", "validate"], root, make_project(root, SHRUNK))
        return root
    shared = tmp_path_factory.getbasetemp().parent  # this run's, above each worker's own
    root, done = shared / "prepared", shared / "prepared.done"
    with FileLock(shared / "prepared.lock"):
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)  # a build that failed half-way
            root.mkdir()
            run(["dvc", "repro", "validate"], root, make_project(root, SHRUNK))
            done.touch()
    return root
