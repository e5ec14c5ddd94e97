"""The default recipe on Fashion-MNIST under Keras' JAX backend, on whatever device JAX finds
(`make bench-gpu`, which sets KERAS_BACKEND=jax): the GPU machines this project is measured on
carry JAX but no TensorFlow, and nothing here imports TensorFlow or MLflow.

The pipeline's own pieces (`build_model`, `make_optimizer`, the label-smoothed loss, the
params' `auto` batch and epochs), trained from NumPy arrays of the official training images
(85% of them, a seeded draw, as many as the pipeline's split trains on), with the official
test set scored after every epoch, off the clock. Each `--variant` trains the same way with
params overridden (`name:key=value;key=value`, keys of params.yaml), so a recipe can be tried
at full length in seconds. Prints one line per epoch and a table: images/s after the first
(compiling) epoch, the best and the last test accuracy; `--out` keeps them as JSON lines.
"""

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np

from pipeline.imagedata.sources import _idx_file, fashion_mnist_folder, read_idx
from pipeline.params import Params, load_raw_params, parse_params, set_params
from pipeline.training.batching import resolve_batch_size
from pipeline.training.model import build_model
from pipeline.training.optimizer import make_optimizer
from pipeline.training.settings import resolve_epochs

TRAIN_SHARE = 0.85  # the pipeline's split carves 15% of the official training set for validation


def load_fashion(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The official training (85%, seeded) and test images as (N, 28, 28, 1) uint8, labels."""
    folder = fashion_mnist_folder()
    images = {s: read_idx(_idx_file(folder, f"{s}-images-idx3-ubyte")) for s in ("train", "t10k")}
    labels = {s: read_idx(_idx_file(folder, f"{s}-labels-idx1-ubyte")) for s in ("train", "t10k")}
    keep = np.random.default_rng(seed).permutation(len(labels["train"]))
    keep = np.sort(keep[: round(TRAIN_SHARE * len(keep))])
    return {
        "train": (images["train"][keep, ..., None], labels["train"][keep]),
        "test": (images["t10k"][..., None], labels["t10k"]),
    }


def variant_params(overrides: str) -> Params:
    """params.yaml with `key=value;key=value` overrides (values in YAML)."""
    raw = set_params(load_raw_params(), [item for item in overrides.split(";") if item])
    return parse_params(raw, source=overrides or "params.yaml")


class EpochClock(keras.callbacks.Callback):
    """Each epoch's training seconds, and the test accuracy after it (scored off the clock)."""

    def __init__(self, test: tuple[np.ndarray, np.ndarray], name: str, out: Path | None):
        super().__init__()
        self.test, self.name, self.out, self.rows = test, name, out, []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        seconds = time.perf_counter() - self.start
        probabilities = self.model.predict(self.test[0], batch_size=1024, verbose=0)
        accuracy = float(np.mean(probabilities.argmax(axis=1) == self.test[1]))
        row = {
            "recipe": self.name,
            "epoch": epoch + 1,
            "seconds": round(seconds, 3),
            "loss": round(float(logs["loss"]), 4),
            "test_accuracy": round(accuracy, 4),
        }
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        if self.out:
            with self.out.open("a") as file:
                file.write(json.dumps(row) + "\n")


def precision(setting: str) -> str:
    """`train.device.mixed_precision`, auto resolved: bfloat16 on a GPU (no loss scaling
    needed, as fast as float16 on Hopper), float32 on a CPU under JAX."""
    if setting != "auto":
        return setting
    import jax

    return "mixed_bfloat16" if jax.devices()[0].platform == "gpu" else "float32"


def train_recipe(
    name: str, params: Params, data: dict, out: Path | None, save: Path | None = None
) -> dict:
    """Train one recipe; its images/s after the first epoch and its test accuracies."""
    x, y = data["train"]
    cfg = params.train
    batch = resolve_batch_size(cfg.batch_size, len(y))
    epochs = resolve_epochs(cfg.epochs, int(np.ceil(len(y) / batch)))
    policy = precision(cfg.device.mixed_precision)
    keras.mixed_precision.set_global_policy(policy)
    seed = params.base.seed
    keras.utils.set_random_seed(seed)
    model = build_model(x.shape[1:], 10, cfg.model, cfg.augmentation, seed)
    steps = int(np.ceil(len(y) / batch))
    model.compile(
        optimizer=make_optimizer(cfg.optimizer, steps, epochs),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
    )
    clock = EpochClock(data["test"], name, out)
    one_hot = np.eye(10, dtype=np.float32)[y]
    model.fit(
        x,
        one_hot,
        batch_size=batch,
        epochs=epochs,
        callbacks=[clock],
        shuffle=True,
        verbose=0,
    )
    if save:
        save.mkdir(parents=True, exist_ok=True)
        model.save(save / f"{name}.keras")
    keras.mixed_precision.set_global_policy("float32")
    later = [row["seconds"] for row in clock.rows[1:]] or [clock.rows[0]["seconds"]]
    return {
        "recipe": name,
        "precision": policy,
        "epochs": epochs,
        "batch": batch,
        "images_per_second": round(len(y) / float(np.median(later)), 1),
        "best_test_accuracy": max(row["test_accuracy"] for row in clock.rows),
        "last_test_accuracy": clock.rows[-1]["test_accuracy"],
        "training_seconds": round(sum(row["seconds"] for row in clock.rows), 1),
    }


def device_name() -> str:
    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        return f"jax {jax.__version__} on {device.platform}: {device.device_kind}"
    return f"{keras.backend.backend()} (CPU unless it found a GPU)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="name:key=value;key=value (params.yaml keys); repeatable",
    )
    parser.add_argument("--no-default", action="store_true", help="only the variants")
    parser.add_argument("--limit", type=int, help="train on the first N images (a smoke test)")
    parser.add_argument("--out", type=Path, help="append each epoch and result as JSON lines")
    parser.add_argument("--save", type=Path, help="keep each trained model as DIR/<name>.keras")
    args = parser.parse_args()
    recipes = ([] if args.no_default else [("default", "")]) + [
        tuple(v.split(":", 1)) if ":" in v else (v, v) for v in args.variant
    ]
    params = [(name, variant_params(overrides)) for name, overrides in recipes]  # checked first
    data = load_fashion(params[0][1].base.seed)
    if args.limit:
        data["train"] = tuple(part[: args.limit] for part in data["train"])
    print(
        f"{device_name()}; keras {keras.__version__}; {len(data['train'][1]):,} training and "
        f"{len(data['test'][1]):,} test images"
    )
    results = []
    for name, recipe in params:
        results.append(train_recipe(name, recipe, data, args.out, args.save))
        if args.out:
            with args.out.open("a") as file:
                file.write(json.dumps(results[-1]) + "\n")
    print(
        f"\n{'recipe':28} {'precision':15} {'epochs':>6} {'batch':>5} {'images/s':>9} "
        f"{'seconds':>7} {'best':>7} {'last':>7}"
    )
    for r in results:
        print(
            f"{r['recipe']:28} {r['precision']:15} {r['epochs']:6d} {r['batch']:5d} "
            f"{r['images_per_second']:9.0f} {r['training_seconds']:7.0f} "
            f"{r['best_test_accuracy']:7.4f} {r['last_test_accuracy']:7.4f}"
        )


if __name__ == "__main__":
    main()
