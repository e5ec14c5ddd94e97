"""Fitting the model through its schedule of phases (one, from scratch; several when transfer
learning unfreezes blocks), each resumable after a kill."""

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from pipeline.imagedata.dataset import image_dataset, label_indices
from pipeline.imagedata.manifest import split_channels
from pipeline.params import Params, TrainParams
from pipeline.paths import CACHE_DIR, RESUME_DIR, SPLIT_DIR
from pipeline.training import distribute
from pipeline.training.callbacks import (
    AtomicBackupAndRestore,
    AveragedWeights,
    PhaseMetrics,
    ResumableEarlyStopping,
    ResumablePlateau,
    Throughput,
    backed_up_epochs,
    load_weights,
    save_weights,
)
from pipeline.training.devices import cpu_has_bf16, visible_gpus
from pipeline.training.mixing import mixed
from pipeline.training.model import build_model
from pipeline.training.optimizer import make_optimizer
from pipeline.training.resume import history_table
from pipeline.training.schedule import Phase, ScheduleState, first_phase, next_phase
from pipeline.training.settings import Machine, Settings, resolve
from pipeline.training.transfer import TransferModel, build_transfer_model, trainable_count

log = logging.getLogger(__name__)


def class_weights(labels: list[int], num_classes: int, mode: str) -> dict[int, float] | None:
    """`balanced` (train.class_weight, resolved): weights inversely proportional to class
    frequency in the training split; `none`: no weights."""
    if mode == "none":
        return None
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=np.asarray(labels))
    return {int(c): float(w) for c, w in zip(present, weights, strict=True)} | {
        c: 1.0 for c in range(num_classes) if c not in present
    }


def resolved_settings(
    params: Params, rows: tuple[pd.DataFrame, pd.DataFrame], classes: list[str]
) -> tuple[Params, Settings, int]:
    """Every auto of a training on these rows, resolved once for the split and this machine
    (`training.settings.resolve`) and printed; and how many GPUs it sees."""
    gpus = visible_gpus(params.train.device.memory_growth)  # before anything touches a GPU
    tasks = distribute.read_cluster(os.environ.get("TF_CONFIG")).tasks
    labels = label_indices(rows[0]["label"], classes)
    machine = Machine(gpus=gpus, bf16=cpu_has_bf16(), cluster_tasks=tasks)
    params, settings = resolve(params, rows, labels, split_channels(SPLIT_DIR), machine)
    log.info(settings.base_why)
    log.info(settings.class_weight_why)
    log.info(
        f"{settings.describe()} (train.epochs {params.train.epochs}, train.batch_size "
        f"{params.train.batch_size}, train.early_stopping.start_from_epoch "
        f"{params.train.early_stopping.start_from_epoch})"
    )
    return params, settings, gpus


@dataclass(frozen=True)
class Plan:
    """A training as planned: the train params (as written, but for train.transfer.base,
    resolved, and train.transfer.weights, an MLflow URI's local file; their auto keys are not
    read: `settings` holds what each became) and the seed."""

    cfg: TrainParams
    settings: Settings
    seed: int


class Network(NamedTuple):
    """The model to fit and, for transfer learning, its base and blocks."""

    model: keras.Model
    transfer: TransferModel | None


@dataclass
class Fitting:
    """What every phase of a training schedule fits with."""

    model: keras.Model
    transfer: TransferModel | None
    cfg: TrainParams  # its auto keys are not read: epochs and stopping_start hold them
    epochs: int
    stopping_start: int  # train.early_stopping.start_from_epoch
    resume_dir: Path  # this process's training state (the chief's: RESUME_DIR)
    learning_rate_scale: float  # every learning rate times this (the replica count rule)
    jit_compile: bool
    steps: int  # per epoch
    train_data: Callable[[int], tf.data.Dataset]  # the training batches from a given epoch on
    validation_data: tf.data.Dataset
    class_weight: dict[int, float] | None
    loggers: list[keras.callbacks.Callback]  # the same instances through every phase
    throughput: Throughput


def run_schedule(fitting: Fitting) -> tuple[ResumableEarlyStopping, pd.DataFrame]:
    """Run the phases (one, from scratch) from where a killed run left off; return the early
    stopping of the last phase (its best epoch is the kept one) and a row per phase."""
    cfg, transfer, folder = fitting.cfg, fitting.transfer, fitting.resume_dir
    blocks = len(transfer.blocks) if transfer else 0
    state_file = folder / "schedule.json"
    state = ScheduleState.load(state_file) or ScheduleState(
        first_phase(cfg, blocks, fitting.epochs), []
    )
    while True:
        phase = state.phase
        stopper = run_phase(fitting, phase)
        table = history_table(folder / "history.csv")
        done = int(table["epoch"].max())
        stalled = stopper.wait >= phase.patience
        following, decision = next_phase(cfg, phase, done, stalled, blocks, fitting.epochs)
        epochs = table[(table["epoch"] > phase.first_epoch) & (table["epoch"] <= done)]
        state.rows.append(
            {
                "phase": phase.index + 1,
                "unfrozen_blocks": phase.unfrozen if transfer else "all",
                "trainable_params": trainable_count(fitting.model),
                "learning_rate": phase.learning_rate * fitting.learning_rate_scale,
                "first_epoch": phase.first_epoch + 1,
                "last_epoch": done,
                "best_val_loss": float(epochs["val_loss"].min()),
                "best_val_accuracy": float(epochs["val_accuracy"].max()),
                "ended": "val_loss stalled" if stalled else "epochs done",
                "decision": decision,
            }
        )
        if transfer is not None:
            log.info(
                f"phase {phase.index + 1} ({phase.unfrozen} of {blocks} blocks unfrozen) "
                f"ended after epoch {done}, {state.rows[-1]['ended']}; {decision}"
            )
        if following is None:
            return stopper, pd.DataFrame(state.rows)
        # the next phase starts from these weights (the best so far, when those are restored)
        save_weights(fitting.model, folder / "phase_start.npz")
        state.phase = following
        state.save(state_file)
        shutil.rmtree(folder / "backup" / f"phase-{phase.index}", ignore_errors=True)


def run_phase(fitting: Fitting, phase: Phase) -> ResumableEarlyStopping:
    """Set what is trainable, recompile with the phase's learning rate, and fit its epochs;
    resumed from the phase's own backup after a kill."""
    model, cfg, folder = fitting.model, fitting.cfg, fitting.resume_dir
    if fitting.transfer is not None:
        fitting.transfer.unfreeze(phase.unfrozen)
    learning_rate = phase.learning_rate * fitting.learning_rate_scale
    optimizer = cfg.optimizer.model_copy(update={"learning_rate": learning_rate})
    model.compile(
        optimizer=make_optimizer(optimizer, fitting.steps, phase.last_epoch - phase.first_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=["accuracy"],
        jit_compile=fitting.jit_compile,
    )
    backup = folder / "backup" / f"phase-{phase.index}"
    start = folder / "phase_start.npz"
    if start.exists() and not backup.exists():
        load_weights(model, start)
    stopper = ResumableEarlyStopping(
        folder, cfg.early_stopping, fitting.stopping_start, phase.patience, phase.index
    )
    saved = stopper.saved_state()
    history = folder / "history.csv"
    done = int(history_table(history)["epoch"].max()) if history.exists() else 0
    if (
        saved
        and saved["phase"] == phase.index
        and (saved["wait"] >= phase.patience or done >= phase.last_epoch)
    ):  # the phase had ended when the run was killed, before the next one was recorded
        stopper.wait, stopper.best_epoch = saved["wait"], saved["best_epoch"]
        if cfg.early_stopping.restore_best_weights:
            load_weights(model, stopper.weights_file)
        else:
            model.optimizer.build(model.trainable_variables)
            model.load_weights(backup / "current" / "latest.weights.h5")
        return stopper
    callbacks = [PhaseMetrics(phase.unfrozen)] if fitting.transfer is not None else []
    callbacks += fitting.loggers
    if cfg.optimizer.schedule == "plateau":
        callbacks.append(ResumablePlateau(folder, cfg.optimizer, phase.index))
    if cfg.optimizer.ema_momentum:  # before the stopper: it judges the averaged weights
        averaged = AveragedWeights(resumed=backed_up_epochs(backup) is not None)
        callbacks += [averaged, stopper, averaged.finish()]
    else:
        callbacks.append(stopper)
    callbacks += [fitting.throughput, AtomicBackupAndRestore(backup)]
    model.fit(
        fitting.train_data(backed_up_epochs(backup) or phase.first_epoch),
        validation_data=fitting.validation_data,
        initial_epoch=phase.first_epoch,
        epochs=phase.last_epoch,
        steps_per_epoch=fitting.steps,  # the shuffled training set repeats without end
        class_weight=fitting.class_weight,
        callbacks=callbacks,
        shuffle=False,  # the dataset is shuffled, reproducibly, by its own seed
        verbose=2,
    )
    return stopper


@dataclass
class TrainingInputs:
    """The training and validation batches, built before the model (the order the seeded
    random state is drawn in is part of what makes a run reproducible)."""

    train_data: Callable[[int], tf.data.Dataset]  # the training batches from a given epoch on
    validation_data: tf.data.Dataset
    steps: int  # per epoch
    cache: str  # memory | disk | off
    train_images: int
    validation_images: int
    class_weight: dict[int, float] | None


def training_inputs(
    plan: Plan,
    dist: distribute.Distribution,
    classes: list[str],
    rows: tuple[pd.DataFrame, pd.DataFrame],
    key: str,
    folder: Path,
) -> TrainingInputs:
    """`rows`: the manifest rows of the training and validation splits; `key`: the
    training's fingerprint, which names its on-disk cache; `folder`: this process's state."""
    train_rows, validation_rows = rows
    settings = plan.settings
    size, channels, cache = settings.image_size, settings.channels, settings.cache
    # two processes on one machine cannot share an on-disk cache while they write it
    task = "" if dist.is_chief else folder.name.removeprefix(RESUME_DIR.name)
    cache_for = {
        split: CACHE_DIR / f"{split}-{key[:16]}{task}" if cache == "disk" else cache
        for split in ("train", "validation")
    }
    # each worker of a cluster keeps its share of every global batch
    shard = distribute.shard_by_data if dist.kind == "multi_worker" else lambda data: data

    def train_data(first_epoch: int) -> tf.data.Dataset:
        batches = image_dataset(
            train_rows,
            classes,
            size,
            channels,
            dist.global_batch,
            shuffle_seed=plan.seed,
            cache=cache_for["train"],
            first_epoch=first_epoch,
        )
        return shard(mixed(batches, plan.cfg.augmentation, plan.seed))

    validation_data = shard(
        image_dataset(
            validation_rows,
            classes,
            size,
            channels,
            dist.global_batch,
            cache=cache_for["validation"],
        )
    )
    steps = int(np.ceil(len(train_rows) / dist.global_batch))
    labels = label_indices(train_rows["label"], classes)
    weights = class_weights(labels, len(classes), settings.class_weight)
    return TrainingInputs(
        train_data, validation_data, steps, cache, len(train_rows), len(validation_rows), weights
    )


def build_network(plan: Plan, num_classes: int, strategy: tf.distribute.Strategy) -> Network:
    """The pipeline's CNN, or a transfer-learning model (`train.transfer.base`), its
    variables on every replica."""
    settings, cfg, seed = plan.settings, plan.cfg, plan.seed
    shape = (settings.image_size, settings.image_size, settings.channels)
    with strategy.scope():
        if settings.base == "none":
            return Network(build_model(shape, num_classes, cfg.model, cfg.augmentation, seed), None)
        transfer = build_transfer_model(shape, num_classes, cfg.transfer, cfg.augmentation, seed)
        return Network(transfer.model, transfer)


def summarise(
    table: pd.DataFrame,
    stopper: ResumableEarlyStopping,
    fitting: Fitting,
    seconds: float,
    train_images: int,
) -> tuple[pd.Series, dict]:
    """The kept epoch's row of the history, and the training's metrics."""
    restored = fitting.cfg.early_stopping.restore_best_weights
    best = table.iloc[stopper.best_epoch if restored else len(table) - 1]
    timings = fitting.throughput.seconds
    later = timings[1:] or timings
    metrics = {
        "best_epoch": int(best["epoch"]),
        "epochs_run": len(table),
        "best_val_accuracy": float(best["val_accuracy"]),
        "best_val_loss": float(best["val_loss"]),
        "training_seconds": round(seconds, 2),
        "images_per_second_first_epoch": round(train_images / timings[0], 1) if timings else None,
        "images_per_second_later_epochs": round(train_images / float(np.mean(later)), 1)
        if later
        else None,
    }
    return best, metrics


def make_fitting(
    network: Network,
    plan: Plan,
    dist: distribute.Distribution,
    inputs: TrainingInputs,
    folder: Path,
    loggers: list[keras.callbacks.Callback],
) -> Fitting:
    """What every phase fits with; `loggers` (the run's per-epoch metrics, on the chief) run
    before the history file's own logger."""
    return Fitting(
        model=network.model,
        transfer=network.transfer,
        cfg=plan.cfg,
        epochs=plan.settings.epochs,
        stopping_start=plan.settings.stopping_start,
        resume_dir=folder,
        learning_rate_scale=dist.learning_rate_scale,
        jit_compile=plan.settings.jit_compile,
        steps=inputs.steps,
        train_data=inputs.train_data,
        validation_data=inputs.validation_data,
        class_weight=inputs.class_weight,
        loggers=[*loggers, keras.callbacks.CSVLogger(str(folder / "history.csv"), append=True)],
        throughput=Throughput(),
    )
