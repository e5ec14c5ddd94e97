"""Keras callbacks whose state survives a kill: early stopping, reduce-on-plateau and the
backup of weights and optimizer, each written atomically; and the per-epoch extras (phase
metrics, wall time)."""

import shutil
import time
from pathlib import Path

import keras
import numpy as np

from pipeline.common.files import read_json, staged_file, write_json
from pipeline.params import EarlyStoppingParams, OptimizerParams
from pipeline.training.transfer import trainable_count


def save_weights(model: keras.Model, path: Path) -> None:
    """The model's weights alone (no optimizer state), replaced atomically: they load into the
    same architecture whatever is trainable and however it is compiled."""
    with staged_file(path) as tmp, tmp.open("wb") as file:
        np.savez(file, *model.get_weights())


def load_weights(model: keras.Model, path: Path) -> None:
    with np.load(path) as saved:
        model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping whose best value, best epoch, patience count and best weights survive
    a resume, so an interrupted run stops and restores exactly as an uninterrupted one.

    Across the phases of a schedule the best value and weights carry over (a new phase must
    beat what came before), while the patience count starts afresh in each phase."""

    def __init__(
        self, folder: Path, cfg: EarlyStoppingParams, start: int, patience: int, phase: int
    ) -> None:
        """`start`: train.early_stopping.start_from_epoch, resolved (`training.settings`)."""
        super().__init__(
            monitor=cfg.monitor,
            mode="min" if cfg.monitor.endswith("loss") else "max",
            patience=patience,
            restore_best_weights=cfg.restore_best_weights,
            verbose=1,
            start_from_epoch=start,
        )
        self.phase = phase
        self.state_file = folder / "early_stopping.json"
        self.weights_file = folder / "best_weights.npz"

    def saved_state(self) -> dict | None:
        return read_json(self.state_file) if self.state_file.exists() else None

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        state = self.saved_state()
        if state is not None:
            self.best, self.best_epoch = state["best"], state["best_epoch"]
            self.wait = state["wait"] if state.get("phase") == self.phase else 0
            if self.restore_best_weights and self.weights_file.exists():
                current = self.model.get_weights()
                load_weights(self.model, self.weights_file)
                self.best_weights = self.model.get_weights()
                self.model.set_weights(current)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        # Both files are replaced atomically: a kill while writing leaves the previous ones.
        if self.best_epoch == epoch and self.restore_best_weights:
            save_weights(self.model, self.weights_file)
        state = {
            "best": None if self.best is None else float(self.best),  # None before the start
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "phase": self.phase,
        }
        write_json(self.state_file, state)


class ResumablePlateau(keras.callbacks.ReduceLROnPlateau):
    """Reduce-on-plateau whose best value carries over a resume and into the next phase; its
    patience and cooldown counts start afresh in a new phase (whose learning rate is new)."""

    def __init__(self, folder: Path, cfg: OptimizerParams, phase: int) -> None:
        super().__init__(factor=cfg.plateau_factor, patience=cfg.plateau_patience)
        self.phase = phase
        self.state_file = folder / "plateau.json"

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if self.state_file.exists():
            state = read_json(self.state_file)
            self.best = state["best"] if state["best"] is not None else self.best
            if state["phase"] == self.phase:
                self.wait, self.cooldown_counter = state["wait"], state["cooldown"]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        state = {
            "best": None if self.best is None else float(self.best),
            "wait": self.wait,
            "cooldown": self.cooldown_counter,
            "phase": self.phase,
        }
        write_json(self.state_file, state)


class PhaseMetrics(keras.callbacks.Callback):
    """Adds the unfrozen block count and trainable parameter count to each epoch's logs (so
    MLflow and the history table get them); runs before the loggers."""

    def __init__(self, unfrozen: int) -> None:
        super().__init__()
        self.unfrozen = unfrozen

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["unfrozen_blocks"] = float(self.unfrozen)
            logs["trainable_params"] = float(trainable_count(self.model))


def seed_states(model: keras.Model) -> list:
    """The random layers' seed-generator states (augmentation, dropout): variables of the
    model that are not its weights, so `save_weights` leaves them out."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' backup of weights, optimizer state and epoch, written so that a kill at any
    moment (even during the very first write) leaves the last complete backup or none: each
    epoch's weights and metadata go to a fresh folder, and renaming one symlink makes it current.
    Keras' own backup writes in place, and a kill mid-write leaves a file h5py cannot open.

    The backup also holds the random layers' seed states, which Keras' leaves out: without
    them a resumed run draws the augmentations of its first epochs again and trains to other
    weights than the run that was not interrupted."""

    SEEDS_FILE = "seed_states.npz"

    def __init__(self, folder: Path) -> None:
        super().__init__(str(folder / "current"), delete_checkpoint=False)
        self.folder = folder

    def _load_model(self) -> None:
        super()._load_model()
        seeds = self.folder / "current" / self.SEEDS_FILE
        if seeds.exists():
            with np.load(seeds) as saved:
                for index, variable in enumerate(seed_states(self.model)):
                    variable.assign(saved[f"arr_{index}"])

    def _save_model(self) -> None:
        target = self.folder / f"epoch-{self._current_epoch}"
        shutil.rmtree(target, ignore_errors=True)  # a write a kill interrupted
        target.mkdir(parents=True)
        self.model.save_weights(target / "latest.weights.h5")
        np.savez(target / self.SEEDS_FILE, *(v.numpy() for v in seed_states(self.model)))
        metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen}
        write_json(target / "training_metadata.json", metadata)
        link = self.folder / "current.partial"
        link.unlink(missing_ok=True)
        link.symlink_to(target.name)
        link.replace(self.folder / "current")  # the one atomic step
        for old in self.folder.glob("epoch-*"):
            if old != target:
                shutil.rmtree(old, ignore_errors=True)


def backed_up_epochs(folder: Path) -> int | None:
    """The epochs an AtomicBackupAndRestore backup holds (where fit will resume), if any."""
    metadata = folder / "current" / "training_metadata.json"
    return read_json(metadata)["epoch"] if metadata.exists() else None


class AveragedWeights(keras.callbacks.SwapEMAWeights):
    """Validation, early stopping, the backup and the kept model all see the moving average
    of the weights (the optimizer's `use_ema`), while training steps on the raw weights.

    Keras' SwapEMAWeights swaps the average in at every epoch's end and out at the next
    epoch's start. Two cases it leaves are handled here: a run resumed from a backup (which
    holds the average as the model's weights and the raw weights in the optimizer's slots)
    starts by swapping back, and when early stopping ends the run, `finish` (a callback after
    the stopper) copies the kept weights into the slots that fit's end writes into the model."""

    def __init__(self, resumed: bool) -> None:
        super().__init__(swap_on_epoch=True)
        self.resumed = resumed

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.resumed:  # the backup's model weights are the average: swap them back out
            self._ema_weights_in_model, self.resumed = True, False
        super().on_epoch_begin(epoch, logs)

    def finish(self) -> keras.callbacks.Callback:
        averaged = self

        class Finish(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                if self.model.stop_training and averaged._ema_weights_in_model:
                    averaged._finalize_ema_values()

        return Finish()


class Throughput(keras.callbacks.Callback):
    """Wall time per epoch, to report images per second for the first and later epochs."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self.start)
