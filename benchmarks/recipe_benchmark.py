"""`make bench-recipe`: time to accuracy on Fashion-MNIST, recipes side by side in one run.

Every recipe gets the same wall-clock budget (`--minutes`, default 15) on the official split
(the 60,000 training images less the same 15% validation the pipeline carves, scored on the
10,000 test images after every epoch, outside the clock):

- default: params.yaml as it is (the pipeline's model, loss, optimizer, schedule and
  augmentation, built by the pipeline's own code), its epochs set to the whole epochs that
  fit the budget (its cosine schedule spans them: it may end before the budget does);
- article: the seed article's exact setup (`pipeline.tools.recipes.ARTICLE`: its CNN at
  64x64 RGB, batch 20, Adam with per-step inverse-time decay);
- keras.io: "Image classification from scratch" (keras.io/examples/vision/
  image_classification_from_scratch): its small Xception-style network with separable
  convolutions, flip and rotation augmentation, Adam at 3e-4, batch 128, at the data's size;
- SVC: scikit-learn's RBF SVC (C=10) on 28x28 pixels, one fit per training-set size
  (2,500, 5,000, ... images, each point its own fit's time) while a fit fits the budget.

The data sit in memory as arrays, so only the recipes differ. Printed: test accuracy against
elapsed training time per recipe (table and reports/bench_recipe/curves.png), and the share of
this machine's float32 arithmetic peak (a matrix-multiply probe in the same run) that the
default recipe's training steps use.
"""

import argparse
import copy
import time

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.svm import SVC

from pipeline.imagedata.dataset import resize
from pipeline.imagedata.sources import _idx_file, fashion_mnist_folder, read_idx
from pipeline.params import load_raw_params, parse_params, set_param
from pipeline.paths import REPORTS_DIR
from pipeline.reporting.plots import save_figure, time_to_accuracy_figure
from pipeline.tools.recipes import ARTICLE
from pipeline.training.mixing import mixed
from pipeline.training.model import build_model
from pipeline.training.optimizer import make_optimizer

OUT = REPORTS_DIR / "bench_recipe"
VALIDATION = 0.15  # the pipeline's split.validation, carved from the official training set


def load_fashion_mnist() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder = fashion_mnist_folder()

    def part(stem: str) -> np.ndarray:
        return read_idx(_idx_file(folder, stem))

    images, labels = part("train-images-idx3-ubyte"), part("train-labels-idx1-ubyte")
    order = np.random.default_rng(0).permutation(len(labels))
    held = int(len(labels) * VALIDATION)
    return {
        "train": (images[order[held:]][..., None], labels[order[held:]]),
        "validation": (images[order[:held]][..., None], labels[order[:held]]),
        "test": (part("t10k-images-idx3-ubyte")[..., None], part("t10k-labels-idx1-ubyte")),
    }


def matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of float32 matrix multiplication on this machine, now."""
    a, b = tf.random.normal((size, size)), tf.random.normal((size, size))
    tf.linalg.matmul(a, b).numpy()
    start = time.perf_counter()
    for _ in range(repeats):
        c = tf.linalg.matmul(a, b)
    c.numpy()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def conv_macs(model: keras.Model) -> int:
    """Multiply-accumulates of one image's forward pass through the convolutions and dense
    layers (the arithmetic that matters)."""
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("Conv2D", "SeparableConv2D", "DepthwiseConv2D"):
            spatial = int(np.prod(layer.output.shape[1:3]))
            total += spatial * sum(
                int(np.prod(w.shape)) for w in layer.weights if "kernel" in w.path
            )
        elif kind == "Dense":
            total += int(np.prod(layer.kernel.shape))
    return total


def params_for(overrides: dict) -> object:
    raw = copy.deepcopy(load_raw_params())
    for key, value in overrides.items():
        set_param(raw, key, value)
    return parse_params(raw)


def as_input(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """uint8 images at the recipe's input size and channels (bilinear, as the decoder)."""
    if images.shape[1:] == (size, size, channels):
        return images
    out = []
    for start in range(0, len(images), 2048):
        part = resize(images[start : start + 2048], size)  # the training decoder's resize
        out.append(np.asarray(tf.image.grayscale_to_rgb(part) if channels == 3 else part))
    return np.concatenate(out)


SCORES_PER_EPOCH = 4  # the test set is scored every quarter epoch (a slow recipe gets points)


class Curve(keras.callbacks.Callback):
    """Test accuracy every quarter epoch against training time (the scoring off the clock);
    stops the fit once the budget is spent. Keras' "epochs" here are quarter epochs."""

    def __init__(self, test: tuple[np.ndarray, np.ndarray], budget: float, name: str) -> None:
        super().__init__()
        self.test, self.budget, self.name = test, budget, name
        self.points: list[dict] = []
        self.elapsed = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.elapsed += time.perf_counter() - self.start
        x, y = self.test
        accuracy = float((self.model.predict(x, batch_size=500, verbose=0).argmax(1) == y).mean())
        epochs = (epoch + 1) / SCORES_PER_EPOCH
        point = {"epoch": epochs, "seconds": round(self.elapsed, 1), "test_accuracy": accuracy}
        self.points.append({"recipe": self.name} | point)
        print(
            f"  {self.name:<8} epoch {epochs:6.2f} {self.elapsed:7.0f} s  {accuracy:.4f}",
            flush=True,
        )
        if self.elapsed >= self.budget:
            self.model.stop_training = True


def fit_curve(
    model: keras.Model, train: tf.data.Dataset, steps: int, epochs: int, batch: int, curve: Curve
) -> float:
    """Fit `epochs` epochs of `steps` steps of `batch` images from the endless `train`, scored
    by `curve`; returns the training images per second."""
    quarter = max(1, steps // SCORES_PER_EPOCH)
    model.fit(
        train,
        steps_per_epoch=quarter,
        epochs=epochs * SCORES_PER_EPOCH,
        callbacks=[curve],
        verbose=0,
    )
    return len(curve.points) * quarter * batch / curve.elapsed


def batches(x: np.ndarray, y: np.ndarray, batch: int, seed: int) -> tf.data.Dataset:
    """Shuffled batches of uint8 images and one-hot labels, one epoch (`.repeat()` for more)."""
    data = tf.data.Dataset.from_tensor_slices((x, tf.one_hot(y, 10)))
    return data.shuffle(len(y), seed=seed).batch(batch)


def epochs_within(model: keras.Model, train: tf.data.Dataset, steps: int, budget: float) -> int:
    """The whole epochs the budget holds, from a timed probe of 20 steps of a copy of the
    model (so a schedule can span exactly the training the budget allows)."""
    probe = keras.models.clone_model(model)
    probe.compile(optimizer="adam", loss="categorical_crossentropy")
    probe.fit(train.take(3), verbose=0)
    start = time.perf_counter()
    probe.fit(train.take(20), verbose=0)
    return max(1, int(budget / ((time.perf_counter() - start) / 20 * steps)))


def pipeline_recipe(name: str, overrides: dict, data: dict, budget: float) -> tuple[list, dict]:
    """A recipe of params.yaml (with overrides) trained by the pipeline's own pieces."""
    params = params_for(overrides)
    cfg, seed = params.train, params.base.seed
    size = 28 if params.base.image_size == "auto" else params.base.image_size
    channels = 1 if params.base.channels == "auto" else params.base.channels
    batch = 128 if cfg.batch_size == "auto" else cfg.batch_size
    x, y = data["train"]
    test = (as_input(data["test"][0], size, channels), data["test"][1])
    keras.utils.set_random_seed(seed)
    model = build_model((size, size, channels), 10, cfg.model, cfg.augmentation, seed)
    train = batches(as_input(x, size, channels), y, batch, seed)
    steps = int(np.ceil(len(y) / batch))
    if cfg.optimizer.schedule in ("cosine", "warmup_cosine"):  # it spans the epochs it is given
        epochs = epochs_within(model, train, steps, budget)
    else:  # the article's per-step decay: training goes on until the budget is spent
        epochs = 1000
    model.compile(
        optimizer=make_optimizer(cfg.optimizer, steps, epochs),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=["accuracy"],
    )
    curve = Curve(test, budget, name)
    endless = mixed(train, cfg.augmentation, seed).repeat()
    rate = fit_curve(model, endless, steps, epochs, batch, curve)
    return curve.points, {
        "macs": conv_macs(model),
        "images_per_second": rate,
        "input": f"{size}x{size}x{channels}, batch {batch}",
    }


def keras_io_model(shape: tuple[int, int, int], classes: int) -> keras.Model:
    """keras.io's "Image classification from scratch" network (its make_model), as published,
    with its augmentation (horizontal flip, rotation 0.1) in front."""
    from keras import layers

    inputs = keras.Input(shape=shape, dtype="uint8")
    x = layers.Rescaling(1.0 / 255)(inputs)  # first here: the augmentation takes floats
    x = layers.RandomFlip("horizontal")(x)
    x = layers.RandomRotation(0.1)(x)
    x = layers.Conv2D(128, 3, strides=2, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    previous = x
    for size in [256, 512, 728]:
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(size, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.SeparableConv2D(size, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        residual = layers.Conv2D(size, 1, strides=2, padding="same")(previous)
        x = layers.add([x, residual])
        previous = x
    x = layers.SeparableConv2D(1024, 3, padding="same")(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.25)(x)
    return keras.Model(inputs, layers.Dense(classes, activation="softmax")(x))


def keras_io_recipe(data: dict, budget: float) -> tuple[list, dict]:
    x, y = data["train"]
    keras.utils.set_random_seed(42)
    model = keras_io_model(x.shape[1:], 10)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-4), loss="categorical_crossentropy", metrics=["accuracy"]
    )
    curve = Curve(data["test"], budget, "keras.io")
    steps = int(np.ceil(len(y) / 128))
    rate = fit_curve(model, batches(x, y, 128, 42).repeat(), steps, 1000, 128, curve)
    return curve.points, {
        "macs": conv_macs(model),
        "images_per_second": rate,
        "input": "x".join(map(str, x.shape[1:])) + ", batch 128",
    }


def svc_recipe(data: dict, budget: float) -> tuple[list, dict]:
    """RBF SVC (C=10, the published table's best SVC setting) on growing training subsets."""
    x, y = data["train"]
    test_x, test_y = data["test"]
    flat = x.reshape(len(x), -1) / 255.0
    test_flat = test_x.reshape(len(test_x), -1) / 255.0
    points, count, last = [], 2500, 0.0
    # each point is one fit (its own time): the next, on twice the images, takes about four
    # times the last (an SVC's fit grows with the square of its training set) and runs only
    # when that fits the budget
    while count <= len(y) and 4 * last < budget:
        start = time.perf_counter()
        model = SVC(C=10, gamma="scale").fit(flat[:count], y[:count])
        last = time.perf_counter() - start
        accuracy = float((model.predict(test_flat) == test_y).mean())
        points.append(
            {"recipe": "SVC", "epoch": count, "seconds": round(last, 1), "test_accuracy": accuracy}
        )
        print(f"  SVC      {count:6d} images {last:7.0f} s  {accuracy:.4f}", flush=True)
        count *= 2
    return points, {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="budget per recipe")
    parser.add_argument("--recipes", default="default,article,keras.io,SVC")
    args = parser.parse_args()
    budget = args.minutes * 60
    data = load_fashion_mnist()
    peak = matmul_peak()
    print(
        f"Fashion-MNIST: {len(data['train'][1])} training, {len(data['test'][1])} test "
        f"images; budget {args.minutes:g} min per recipe; float32 matmul peak "
        f"{peak:.0f} GFLOP/s"
    )
    runs = {
        "default": lambda: pipeline_recipe("default", {}, data, budget),
        "article": lambda: pipeline_recipe("article", ARTICLE, data, budget),
        "keras.io": lambda: keras_io_recipe(data, budget),
        "SVC": lambda: svc_recipe(data, budget),
    }
    points, about = [], {}
    for name in args.recipes.split(","):
        found, about[name] = runs[name]()
        points += found
    table = pd.DataFrame(points)
    OUT.mkdir(parents=True, exist_ok=True)
    table.to_csv(OUT / "curves.csv", index=False)
    save_figure(time_to_accuracy_figure(table, args.minutes), OUT / "curves.png")
    print("\nbest test accuracy within the budget:")
    for name, rows in table.groupby("recipe", sort=False):
        best = rows.loc[rows["test_accuracy"].idxmax()]
        extra = about.get(name, {})
        rate = f", {extra['images_per_second']:.0f} images/s ({extra['input']})" if extra else ""
        print(f"  {name:<8} {best['test_accuracy']:.4f} after {best['seconds']:.0f} s{rate}")
    if "default" in about:
        used = about["default"]["macs"] * 2 * 3 * about["default"]["images_per_second"] / 1e9
        print(
            f"default recipe: {about['default']['macs'] / 1e6:.1f} M multiply-adds an image "
            f"forward, about 3x that per training image: {used:.0f} GFLOP/s, "
            f"{used / peak:.0%} of the {peak:.0f} GFLOP/s matmul peak"
        )
    print(f"table: {OUT / 'curves.csv'}; picture: {OUT / 'curves.png'}")


if __name__ == "__main__":
    main()
