"""benchmarks.gpu_benchmark: the recipe trains under Keras' JAX backend without TensorFlow or
MLflow (the GPU machines carry neither), and a variant that names no param stops it."""

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pipeline.params import ParamsError
from pipeline.paths import ROOT


def _write_idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(side).to_bytes(4, "big") for side in array.shape
    )
    with gzip.open(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def tiny_fashion(tmp_path):
    """Fashion-MNIST's four IDX files with 60 training and 20 test images of 28x28."""
    rng = np.random.default_rng(0)
    for stem, count in (("train", 60), ("t10k", 20)):
        _write_idx(tmp_path / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28)))
        _write_idx(tmp_path / f"{stem}-labels-idx1-ubyte.gz", np.arange(count) % 10)
    return tmp_path


# The GPU machine as the script meets it: no TensorFlow, no MLflow. Keras' own
# set_random_seed imports TensorFlow when it can, to seed it too; here it cannot.
WITHOUT_TENSORFLOW = """
import runpy, sys

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "mlflow"):
            raise ModuleNotFoundError(f"No module named {name!r} (absent on the GPU machine)")

sys.meta_path.insert(0, Absent())
sys.argv = sys.argv[1:]
runpy.run_module("benchmarks.gpu_benchmark", run_name="__main__")
"""


@pytest.mark.slow
def test_the_recipe_trains_under_jax_without_tensorflow_or_mlflow(tiny_fashion, tmp_path):
    out = tmp_path / "rows.jsonl"
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            WITHOUT_TENSORFLOW,
            "gpu_benchmark",
            "--variant",
            "short:train.epochs=2",
            "--no-default",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "KERAS_BACKEND": "jax", "FASHION_MNIST_DIR": str(tiny_fashion)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    epochs, result = rows[:-1], rows[-1]
    assert [row["epoch"] for row in epochs] == [1, 2]
    assert result["recipe"] == "short" and result["epochs"] == 2
    assert result["batch"] == 20  # auto on 51 training images (85% of 60)
    assert 0.0 <= result["best_test_accuracy"] <= 1.0 and result["images_per_second"] > 0
    assert run.stdout.startswith("jax ") and run.stdout.splitlines()[-1].startswith("short ")


def test_a_variant_naming_an_unknown_param_is_refused():
    from benchmarks.gpu_benchmark import variant_params

    assert variant_params("train.epochs=3;base.seed=1").train.epochs == 3
    with pytest.raises(ParamsError, match=r"unknown param train\.epoch: params\.yaml has no epoch"):
        variant_params("train.epoch=3")
