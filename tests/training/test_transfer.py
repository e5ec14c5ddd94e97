"""Transfer learning: bases built offline, real architectural blocks, freezing, schedules."""

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from pipeline.params import ModelParams, TrainParams, TransferParams, parse_params
from pipeline.serving.inference import ModelNotFoundError
from pipeline.training.callbacks import Throughput
from pipeline.training.fitting import Fitting, run_schedule
from pipeline.training.model import build_model
from pipeline.training.schedule import Phase, ScheduleState, first_phase, next_phase
from pipeline.training.transfer import TransferError, build_transfer_model, trainable_count
from tests.conftest import _merge

SHAPE = (32, 32, 3)
TRANSFER = {
    "base": "mobilenet_v3_small",
    "weights": "none",
    "dense_units": [8],
    "dropout": 0.0,
    "schedule": "auto",
    "phases": [{"epochs": 1, "unfreeze": 0, "learning_rate": 0.01}],
    "patience": 2,
    "learning_rate_factor": 0.1,
}
BLOCKS = {
    "vgg16": [f"block{n}" for n in range(1, 6)],
    "resnet50": [f"conv{n}" for n in range(1, 6)],
    "mobilenet_v2": ["stem", *[f"stage{n}" for n in range(1, 8)], "top"],
    "mobilenet_v3_small": ["stem", *[f"stage{n}" for n in range(1, 6)], "top"],
    "efficientnet_b0": ["stem", *[f"block{n}" for n in range(1, 8)], "top"],
    "efficientnet_lite0": ["stem", *[f"block{n}" for n in range(1, 8)], "top"],
}


def transfer_params(**changes) -> TransferParams:
    return TransferParams.model_validate({**TRANSFER, **changes})


def weighted(model: keras.Model, names: set[str] | None = None) -> set[str]:
    return {
        layer.name
        for layer in model.layers
        if layer.weights and (names is None or layer.name in names)
    }


@pytest.mark.parametrize("architecture", sorted(BLOCKS))
def test_blocks_are_the_architectures_units_and_unfreeze_from_the_top(architecture):
    built = build_transfer_model(SHAPE, 3, transfer_params(base=architecture), seed=0)
    base, blocks = built.base, built.blocks
    assert list(blocks) == BLOCKS[architecture]
    layer_names = [layer.name for layer in base.layers]
    assert [name for block in blocks.values() for name in block] == layer_names  # each once
    assert built.model.output_shape == (None, 3)

    head = trainable_count(built.model)
    assert base.trainable is False and head > 0  # the base starts frozen, the head trains
    for count in (1, 2, len(blocks)):
        built.unfreeze(count)
        open_blocks = list(blocks.values())[len(blocks) - count :]
        expected = weighted(base, {name for block in open_blocks for name in block}) - {
            layer.name
            for layer in base.layers
            if isinstance(layer, keras.layers.BatchNormalization)
        }  # batch normalisation stays frozen
        assert {layer.name for layer in base.layers if layer.trainable and layer.weights} == (
            expected
        )
        assert trainable_count(built.model) > head
    assert trainable_count(built.model) == trainable_count(built.model.get_layer("dense1")) + (
        trainable_count(built.model.get_layer("probabilities")) + trainable_count(base)
    )
    built.unfreeze(0)
    assert trainable_count(built.model) == head


def test_a_locally_saved_base_is_loaded(tmp_path):
    first = build_transfer_model(SHAPE, 3, transfer_params(), seed=0)
    path = tmp_path / "base.weights.h5"
    first.base.save_weights(path)
    keras.utils.set_random_seed(1)  # a fresh base would be initialised differently
    second = build_transfer_model(SHAPE, 3, transfer_params(weights=str(path)), seed=0)
    for a, b in zip(first.base.get_weights(), second.base.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TransferError, match=r"weights file .*missing\.h5 not found"):
        build_transfer_model(SHAPE, 3, transfer_params(weights=str(tmp_path / "missing.h5")))


def test_imagenet_weights_come_from_the_keras_cache_or_an_error_naming_the_file(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    expected = tmp_path / "keras/models/weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    with pytest.raises(TransferError, match="training downloads nothing") as error:
        build_transfer_model(SHAPE, 3, transfer_params(weights="imagenet"))
    assert str(expected) in str(error.value) and "storage.googleapis.com" in str(error.value)
    assert "`make weights`" in str(error.value)  # the command that fetches it
    expected.parent.mkdir(parents=True)
    expected.write_bytes(b"not the published file")  # a damaged or wrong file is named too
    with pytest.raises(TransferError, match="does not match the published file"):
        build_transfer_model(SHAPE, 3, transfer_params(weights="imagenet"))


def seed_cnn(convs: int = 1, residual: bool = False) -> keras.Model:
    cfg = ModelParams(
        filters=[4, 8],
        convs_per_block=convs,
        kernel_size=3,
        padding="same",
        pool_size=2,
        dense_units=[16],
        batch_norm=True,
        dropout=0.0,
        head="flatten",
        residual=residual,
    )
    return build_model(SHAPE, 5, cfg)


def test_a_residual_pipeline_model_lends_its_blocks_shortcuts_and_all(tmp_path):
    earlier = seed_cnn(convs=2, residual=True)
    path = tmp_path / "earlier.keras"
    earlier.save(path)
    built = build_transfer_model(SHAPE, 2, transfer_params(base="pipeline", weights=str(path)))
    assert "block2_add2" in [layer.name for layer in built.base.layers]
    images = np.random.default_rng(0).integers(0, 256, size=(2, *SHAPE)).astype("float32")
    blocks = keras.Model(earlier.input, earlier.get_layer("block2_pool").output)
    rescaled = images / 255.0  # what the earlier model's rescaling gave its first block
    np.testing.assert_allclose(
        built.base.predict(rescaled, verbose=0), blocks.predict(images, verbose=0), atol=1e-5
    )


def test_a_pipeline_model_lends_its_convolutional_blocks_to_a_new_head(tmp_path):
    earlier = seed_cnn()
    path = tmp_path / "earlier.keras"
    earlier.save(path)
    built = build_transfer_model(SHAPE, 2, transfer_params(base="pipeline", weights=str(path)))
    assert list(built.blocks) == ["block1", "block2"]
    assert built.model.output_shape == (None, 2)  # the head sized to the current classes
    for name in ("block1_conv1", "block2_conv1_bn"):
        for a, b in zip(
            earlier.get_layer(name).get_weights(),
            built.base.get_layer(name).get_weights(),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
    assert "dense1" not in weighted(built.base)  # the old head stays behind
    with pytest.raises(TransferError, match=r"model file .*gone\.keras not found"):
        build_transfer_model(SHAPE, 2, transfer_params(base="pipeline", weights="/gone.keras"))


def test_a_pipeline_model_is_found_by_its_mlflow_uri(tmp_path, monkeypatch):
    """Training reads model files only: the stage fetches an MLflow URI's model first
    (tracking.registry.local_transfer_weights), and the base is built from that file."""
    import mlflow

    from pipeline.params import load_params
    from pipeline.tracking import registry, store

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(registry, "MODELS_CACHE_DIR", tmp_path / "cache")
    experiment = store.configure()
    earlier = seed_cnn()
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.keras.log_model(earlier, name="model", pip_requirements=["keras"])
    uri = f"runs:/{run.info.run_id}/model"
    params = load_params()
    transfer = params.train.transfer.model_copy(update={"base": "pipeline", "weights": uri})
    params = params.model_copy(
        update={"train": params.train.model_copy(update={"transfer": transfer})}
    )
    local = registry.local_transfer_weights(params).train.transfer.weights
    assert tmp_path / "cache" in Path(local).parents and local.endswith(".keras")
    built = build_transfer_model(SHAPE, 4, transfer_params(base="pipeline", weights=local))
    np.testing.assert_array_equal(
        built.base.get_layer("block1_conv1").get_weights()[0],
        earlier.get_layer("block1_conv1").get_weights()[0],
    )
    missing = params.model_copy(
        update={
            "train": params.train.model_copy(
                update={"transfer": transfer.model_copy(update={"weights": "runs:/nope/model"})}
            )
        }
    )
    with pytest.raises(ModelNotFoundError, match="cannot load the MLflow model runs:/nope/model"):
        registry.local_transfer_weights(missing)


def test_training_changes_only_the_unfrozen_block_and_no_batch_norm_layer():
    built = build_transfer_model(SHAPE, 3, transfer_params(), seed=0)
    built.unfreeze(1)
    model, base = built.model, built.base
    before = {v.path: v.numpy().copy() for v in base.weights}
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, *SHAPE), dtype=np.uint8)
    labels = np.eye(3)[rng.integers(0, 3, 16)]
    model.fit(images, labels, epochs=2, batch_size=8, verbose=0)

    changed = {v.path for v in base.weights if not np.array_equal(v.numpy(), before[v.path])}
    batch_norm = {
        v.path
        for layer in base.layers
        if isinstance(layer, keras.layers.BatchNormalization)
        for v in layer.weights
    }
    assert any("moving" in path for path in batch_norm)
    assert not changed & batch_norm  # statistics, scale and offset: all in inference mode
    assert "conv_1" in built.blocks["top"]
    assert changed == {"conv_1/kernel"}  # the top block's convolution learnt; nothing else


# --- schedules -------------------------------------------------------------------------------


def train_params(**transfer) -> TrainParams:
    from pipeline.params import load_raw_params

    raw = load_raw_params()
    raw["train"]["transfer"] = {**TRANSFER, **transfer}
    raw["train"]["epochs"] = 30  # as train resolves `auto` for the digits
    raw["train"]["optimizer"]["learning_rate"] = 0.001
    return parse_params(raw).train


def test_the_automatic_schedule_unfreezes_a_block_whenever_validation_loss_stalls():
    cfg = train_params(schedule="auto", patience=2, learning_rate_factor=0.1)
    phase = first_phase(cfg, blocks=2, epochs=cfg.epochs)
    assert (phase.unfrozen, phase.learning_rate, phase.last_epoch) == (0, 0.001, cfg.epochs)
    phase, reason = next_phase(cfg, phase, epochs_done=5, stalled=True, blocks=2, epochs=cfg.epochs)
    assert (phase.unfrozen, phase.first_epoch) == (1, 5)
    assert phase.learning_rate == pytest.approx(0.0001)
    assert "unfreeze block 2 of 2" in reason
    phase, _ = next_phase(cfg, phase, epochs_done=9, stalled=True, blocks=2, epochs=cfg.epochs)
    assert phase.unfrozen == 2 and phase.learning_rate == pytest.approx(0.00001)
    done, reason = next_phase(cfg, phase, epochs_done=12, stalled=True, blocks=2, epochs=cfg.epochs)
    assert done is None and "all 2 blocks unfrozen" in reason
    done, reason = next_phase(
        cfg, first_phase(cfg, 2, cfg.epochs), cfg.epochs, stalled=False, blocks=2, epochs=cfg.epochs
    )
    assert done is None and f"train.epochs = {cfg.epochs}" in reason


def test_the_manual_schedule_follows_its_phases_and_names_a_block_count_too_high():
    phases = [
        {"epochs": 3, "unfreeze": 0, "learning_rate": 0.01},
        {"epochs": 4, "unfreeze": 2, "learning_rate": 0.001},
    ]
    cfg = train_params(schedule="manual", phases=phases)
    phase = first_phase(cfg, blocks=2, epochs=cfg.epochs)
    assert (phase.unfrozen, phase.learning_rate, phase.first_epoch, phase.last_epoch) == (
        0,
        0.01,
        0,
        3,
    )
    phase, _ = next_phase(
        cfg, phase, epochs_done=2, stalled=True, blocks=2, epochs=cfg.epochs
    )  # stopped early
    assert (phase.unfrozen, phase.first_epoch, phase.last_epoch) == (2, 2, 6)
    assert next_phase(cfg, phase, 6, stalled=False, blocks=2, epochs=cfg.epochs)[0] is None
    with pytest.raises(ValueError, match=r"phases\[1\].unfreeze = 2, but the base .* has 1 blocks"):
        next_phase(
            cfg, first_phase(cfg, 1, cfg.epochs), 3, stalled=False, blocks=1, epochs=cfg.epochs
        )


def test_params_name_what_a_transfer_setup_lacks(raw_params):
    from pipeline.params import ParamsError

    grey = _merge(raw_params, {"base": {"channels": 1}, "train": {"transfer": {"base": "vgg16"}}})
    with pytest.raises(ParamsError, match=r"base\.channels: 3"):
        parse_params(grey)
    long = _merge(
        raw_params, {"train": {"epochs": 5, "transfer": {"base": "vgg16", "schedule": "manual"}}}
    )
    with pytest.raises(ParamsError, match=r"add up to 20 epochs, more than train\.epochs = 5"):
        parse_params(long)
    no_model = _merge(raw_params, {"train": {"transfer": {"base": "pipeline", "weights": "none"}}})
    with pytest.raises(ParamsError, match="base pipeline needs weights"):
        parse_params(no_model)


class Record(keras.callbacks.Callback):
    """What each epoch trains with: the optimizer object, its learning rate, trainable count."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[tuple[int, float, int]] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.epochs.append((id(self.model.optimizer), rate, trainable_count(self.model)))


def test_a_manual_schedule_recompiles_between_phases_and_carries_the_best_value(tmp_path):
    """With every learning rate scaled by 3 (as for three replicas, `linear`)."""
    import tensorflow as tf

    phases = [
        {"epochs": 2, "unfreeze": 0, "learning_rate": 0.01},
        {"epochs": 2, "unfreeze": 1, "learning_rate": 0.001},
    ]
    cfg = train_params(schedule="manual", phases=phases)
    cfg = cfg.model_copy(
        update={"optimizer": cfg.optimizer.model_copy(update={"schedule": "constant"})}
    )
    built = build_transfer_model(SHAPE, 3, cfg.transfer, seed=0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, *SHAPE), dtype=np.uint8)
    labels = np.eye(3, dtype="float32")[rng.integers(0, 3, 24)]
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    record = Record()
    fitting = Fitting(
        model=built.model,
        transfer=built,
        cfg=cfg,
        epochs=cfg.epochs,
        stopping_start=0,
        resume_dir=tmp_path,
        learning_rate_scale=3.0,
        jit_compile=False,
        steps=3,
        train_data=lambda first: data.repeat(),
        validation_data=data,
        class_weight=None,
        loggers=[record, keras.callbacks.CSVLogger(str(tmp_path / "history.csv"), append=True)],
        throughput=Throughput(),
    )
    stopper, table = run_schedule(fitting)

    optimizers, rates, trainable = zip(*record.epochs, strict=True)
    assert len(set(optimizers[:2])) == 1 and len(set(optimizers)) == 2  # recompiled once
    assert rates == pytest.approx([0.03, 0.03, 0.003, 0.003])
    assert table["learning_rate"].tolist() == pytest.approx([0.03, 0.003])
    assert trainable[0] == trainable[1] < trainable[2] == trainable[3]
    assert table["unfrozen_blocks"].tolist() == [0, 1]
    assert table["first_epoch"].tolist() == [1, 3] and table["last_epoch"].tolist() == [2, 4]
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["unfrozen_blocks"].tolist() == [0, 0, 1, 1]
    assert stopper.best == pytest.approx(history["val_loss"].min())  # across both phases
    state = ScheduleState.load(tmp_path / "schedule.json")
    assert state.phase == Phase(1, 1, 0.001, 2, 4, cfg.early_stopping.patience)
