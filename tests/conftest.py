"""Shared fixtures: the real params shrunk to test size, and tiny real image folders."""

import copy
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
}


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
    from pipeline.imagedata.assignment import build_split
    from pipeline.params import load_params

    cfg = load_params().split.model_copy(update={"validation": 0.2, "test": 0.2, **changes})
    return build_split(root, cfg, seed=seed, channels=3, previous={})


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with SHRUNK params after `dvc repro validate`: the data stages' outputs, lock
    and cache, for `make_project(..., prepared=...)` to start from."""
    from tests.projects import make_project, run

    root = tmp_path_factory.mktemp("prepared")
    env = make_project(root, SHRUNK)
    run(["dvc", "repro", "validate"], root, env)
    return root
