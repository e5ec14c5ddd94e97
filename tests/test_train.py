import keras
import numpy as np
import pandas as pd
import pytest

from pipeline import train
from pipeline.dataset import choose_cache, image_dataset
from pipeline.params import load_params
from tests.conftest import split_table


def test_balanced_class_weights_favour_the_rare_class():
    weights = train.class_weights([0, 0, 0, 1], num_classes=3, mode="balanced")
    assert weights[1] == pytest.approx(3 * weights[0])
    assert weights[2] == 1.0  # absent from training: neutral
    assert train.class_weights([0, 1], 2, "none") is None


@pytest.mark.parametrize(
    ("schedule", "kind"),
    [
        ("inverse_time", keras.optimizers.schedules.InverseTimeDecay),
        ("cosine", keras.optimizers.schedules.CosineDecay),
    ],
)
def test_schedules(schedule, kind):
    cfg = load_params().train.optimizer.model_copy(update={"schedule": schedule})
    optimizer = train.make_optimizer(cfg, total_steps=100)
    assert isinstance(optimizer._learning_rate, kind)


def test_the_seed_schedule_decays_per_step_as_the_article_did():
    cfg = load_params().train.optimizer
    rate = train.make_optimizer(cfg, 100)._learning_rate
    assert float(rate(1000)) == pytest.approx(1e-3 / (1 + 1e-3 * 1000))


def test_plateau_schedule_starts_constant():
    cfg = load_params().train.optimizer.model_copy(update={"schedule": "plateau"})
    assert float(train.make_optimizer(cfg, 100).learning_rate) == pytest.approx(1e-3)


def test_auto_device_policy_on_a_cpu(monkeypatch):
    cfg = load_params().train.device
    try:
        monkeypatch.setattr(train, "cpu_has_bf16", lambda: True)
        setup = train.configure_devices(cfg)
        assert (setup.precision, setup.jit_compile) == ("mixed_bfloat16", False)
        assert setup.device.startswith("CPU")
        monkeypatch.setattr(train, "cpu_has_bf16", lambda: False)
        assert train.configure_devices(cfg).precision == "float32"
        forced = cfg.model_copy(update={"mixed_precision": "float32", "jit_compile": "on"})
        assert train.configure_devices(forced) == train.DeviceSetup(setup.device, "float32", True)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_cache_auto_keeps_small_data_in_memory():
    assert choose_cache("auto", 1000, 64, 3) == "memory"
    assert choose_cache("auto", 10**9, 512, 3) == "disk"
    assert choose_cache("off", 10, 8, 1) == "off"


def test_disk_cache_gives_the_same_batches(image_tree, tmp_path):
    rows = split_table(image_tree)
    rows = rows[rows["split"] != ""].reset_index(drop=True)
    split_dir = tmp_path / "split"
    from pipeline.files import link_or_copy

    for row in rows.itertuples():
        link_or_copy(image_tree / row.raw_path, split_dir / row.path)
    classes = ["cat", "dog", "owl"]
    common = dict(image_size=8, channels=1, batch_size=4, root=split_dir)
    memory = image_dataset(rows, classes, cache="memory", **common)
    disk = image_dataset(rows, classes, cache=tmp_path / "cache" / "train", **common)
    for _ in range(2):  # the second pass reads the cache files
        for (a, la), (b, lb) in zip(memory, disk, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
            np.testing.assert_array_equal(la.numpy(), lb.numpy())
    assert any((tmp_path / "cache").iterdir())


def test_history_counts_an_epoch_redone_after_a_kill_once(tmp_path):
    path = tmp_path / "history.csv"
    pd.DataFrame({"epoch": [0, 1, 1, 2], "loss": [3.0, 2.0, 1.9, 1.0]}).to_csv(path, index=False)
    table = train.history_table(path)
    assert table["epoch"].tolist() == [1, 2, 3]
    assert table["loss"].tolist() == [3.0, 1.9, 1.0]


def test_a_stale_backup_is_discarded(tmp_path):
    folder = tmp_path / "resume"
    folder.mkdir()
    (folder / "run.json").write_text('{"run_id": "abc", "fingerprint": "old"}')
    (folder / "junk").write_text("x")
    assert train.prepare_resume(folder, "new") is None
    assert list(folder.iterdir()) == []
    (folder / "run.json").write_text('{"run_id": "abc", "fingerprint": "new"}')
    assert train.prepare_resume(folder, "new") == "abc"


def _tiny_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    return model


def _fit(folder, epochs: int) -> keras.callbacks.History:
    x = np.random.default_rng(0).random((16, 4), dtype=np.float32)
    y = np.eye(2, dtype=np.float32)[np.arange(16) % 2]
    backup = train.AtomicBackupAndRestore(folder)
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
