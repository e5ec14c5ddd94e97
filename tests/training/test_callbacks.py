"""training.callbacks: Keras' backup written so that a kill at any moment leaves a usable one."""

import contextlib

import keras
import numpy as np

from pipeline.params import load_params
from pipeline.training.callbacks import (
    AtomicBackupAndRestore,
    AveragedWeights,
    ResumableEarlyStopping,
    backed_up_epochs,
)


def _tiny_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    return model


def _fit(folder, epochs: int) -> keras.callbacks.History:
    x = np.random.default_rng(0).random((16, 4), dtype=np.float32)
    y = np.eye(2, dtype=np.float32)[np.arange(16) % 2]
    backup = AtomicBackupAndRestore(folder)
    return _tiny_model().fit(x, y, epochs=epochs, callbacks=[backup], verbose=0)


def test_backup_resumes_after_the_last_complete_epoch(tmp_path):
    _fit(tmp_path, epochs=2)
    # a kill while epoch 3 was written: a half-written weights file and a dangling new link
    interrupted = tmp_path / "epoch-3"
    interrupted.mkdir()
    (interrupted / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    (tmp_path / "current.partial").symlink_to("epoch-3")
    history = _fit(tmp_path, epochs=4)
    assert history.epoch == [2, 3]  # epochs 3 and 4, from the backup of epoch 2
    assert (tmp_path / "current").resolve().name == "epoch-4"
    assert [p.name for p in tmp_path.glob("epoch-*")] == ["epoch-4"]


def test_a_kill_during_the_first_backup_starts_afresh(tmp_path):
    first = tmp_path / "epoch-1"
    first.mkdir()
    (first / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n truncated")
    history = _fit(tmp_path, epochs=2)
    assert history.epoch == [0, 1]


def _random_model() -> keras.Model:
    """Augmentation and dropout: layers whose draws depend on a seed state, not on weights."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            keras.layers.RandomTranslation(0.2, 0.2, seed=1),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.5, seed=2),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    return model


def _fit_random(folder, epochs: int) -> keras.Model:
    x = np.random.default_rng(0).random((16, 4, 4, 1), dtype=np.float32)
    y = np.eye(2, dtype=np.float32)[np.arange(16) % 2]
    model = _random_model()
    model.fit(
        x, y, epochs=epochs, shuffle=False, callbacks=[AtomicBackupAndRestore(folder)], verbose=0
    )
    return model


def test_a_resumed_fit_draws_what_the_uninterrupted_one_draws(tmp_path):
    """Stopped after epoch 2 and resumed to 4, the weights equal those of 4 epochs straight:
    the backup carries the seed states of the augmentation and dropout layers."""
    straight = _fit_random(tmp_path / "straight", epochs=4)
    _fit_random(tmp_path / "resumed", epochs=2)
    resumed = _fit_random(tmp_path / "resumed", epochs=4)
    for mine, theirs in zip(resumed.get_weights(), straight.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert (tmp_path / "resumed/epoch-4/seed_states.npz").exists()


class _Kill(keras.callbacks.Callback):
    """Stands for a kill: the run dies as epoch `at` (counted from 0) begins."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == self.at:
            raise KeyboardInterrupt


def _fit_averaged(
    folder, epochs: int, kill_at: int | None = None, stop_at: int | None = None, finish=True
):
    """A tiny model trained with the moving average of its weights (AveragedWeights) and the
    backup; returns the model and its optimizer."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    optimizer = keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=0.8)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy")
    x = np.random.default_rng(0).random((16, 4), dtype=np.float32)
    y = np.eye(2, dtype=np.float32)[np.arange(16) % 2]
    averaged = AveragedWeights(resumed=backed_up_epochs(folder) is not None)
    callbacks = [averaged]
    if stop_at is not None:
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: setattr(model, "stop_training", epoch == stop_at)
            )
        )
    callbacks += [averaged.finish()] if finish else []
    callbacks.append(AtomicBackupAndRestore(folder))
    if kill_at is not None:
        callbacks.append(_Kill(kill_at))
    with contextlib.suppress(KeyboardInterrupt):  # the kill
        model.fit(x, y, batch_size=4, epochs=epochs, shuffle=False, callbacks=callbacks, verbose=0)
    return model, optimizer


def test_the_kept_weights_are_the_average_also_after_early_stopping_and_a_resume(tmp_path):
    whole, _ = _fit_averaged(tmp_path / "whole", epochs=4)
    _fit_averaged(tmp_path / "resumed", epochs=4, kill_at=2)  # killed after two epochs
    resumed, _ = _fit_averaged(tmp_path / "resumed", epochs=4)
    for a, b in zip(whole.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5)  # training went on from the raw weights

    # two epochs: Keras writes the average in at the last epoch's end ...
    two, _ = _fit_averaged(tmp_path / "two", epochs=2)
    # ... and the same average is kept when early stopping ends a longer run there
    stopped, _ = _fit_averaged(tmp_path / "stopped", epochs=4, stop_at=1)
    for kept, average in zip(stopped.get_weights(), two.get_weights(), strict=True):
        np.testing.assert_allclose(kept, average, rtol=1e-6)
    # which Keras alone does not do: its fit ends by writing the raw weights in
    unfinished, _ = _fit_averaged(tmp_path / "unfinished", epochs=4, stop_at=1, finish=False)
    assert not np.allclose(unfinished.get_weights()[0], two.get_weights()[0])


def test_early_stopping_waits_for_its_start_epoch_before_counting_patience(tmp_path):
    """A validation loss that never improves after the first epoch: patience 1 stops at once
    from epoch 0, and only after epoch 4 (of the 0-based epochs) when the stopper starts at 3."""
    cfg = load_params().train.early_stopping
    x = np.random.default_rng(0).random((16, 4), dtype=np.float32)
    y = np.eye(2, dtype=np.float32)[np.arange(16) % 2]
    worse = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: logs.update(val_loss=float(epoch))
    )  # each epoch's validation loss worse than the last
    ran = {}
    for start in (0, 3):
        stopper = ResumableEarlyStopping(tmp_path / str(start), cfg, start, 1, 0)
        (tmp_path / str(start)).mkdir()
        history = _tiny_model().fit(x, y, epochs=10, callbacks=[worse, stopper], verbose=0)
        ran[start] = len(history.history["loss"])
    assert ran == {0: 2, 3: 5}
