"""training.callbacks: Keras' backup written so that a kill at any moment leaves a usable one."""

import keras
import numpy as np

from pipeline.training.callbacks import AtomicBackupAndRestore


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
    model = keras.Sequential([
        keras.Input((4, 4, 1)),
        keras.layers.RandomTranslation(0.2, 0.2, seed=1),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.5, seed=2),
        keras.layers.Dense(2, activation="softmax"),
    ])  # fmt: skip
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    return model


def _fit_random(folder, epochs: int) -> keras.Model:
    x = np.random.default_rng(0).random((16, 4, 4, 1), dtype=np.float32)
    y = np.eye(2, dtype=np.float32)[np.arange(16) % 2]
    model = _random_model()
    model.fit(x, y, epochs=epochs, shuffle=False, callbacks=[AtomicBackupAndRestore(folder)],
              verbose=0)  # fmt: skip
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
