"""training.optimizer: Adam or AdamW and the learning-rate schedules."""

import keras
import pytest

from pipeline.params import load_params
from pipeline.training.optimizer import make_optimizer


@pytest.mark.parametrize(
    ("schedule", "kind"),
    [
        ("inverse_time", keras.optimizers.schedules.InverseTimeDecay),
        ("cosine", keras.optimizers.schedules.CosineDecay),
        ("warmup_cosine", keras.optimizers.schedules.CosineDecay),
    ],
)
def test_schedules(schedule, kind):
    cfg = load_params().train.optimizer.model_copy(update={"schedule": schedule})
    optimizer = make_optimizer(cfg, steps_per_epoch=10, epochs=10)
    assert isinstance(optimizer._learning_rate, kind)


def test_the_seed_schedule_decays_per_step_as_the_article_did():
    cfg = load_params().train.optimizer.model_copy(
        update={"schedule": "inverse_time", "learning_rate": 1e-3}
    )
    rate = make_optimizer(cfg, 10, 10)._learning_rate
    assert float(rate(1000)) == pytest.approx(1e-3 / (1 + 1e-3 * 1000))


def test_warmup_cosine_is_counted_in_epochs_whatever_the_data_size():
    cfg = load_params().train.optimizer.model_copy(
        update={"schedule": "warmup_cosine", "learning_rate": 3e-3, "warmup_epochs": 1}
    )
    for steps in (14, 400):  # the digits' and Fashion-MNIST's steps per epoch
        rate = make_optimizer(cfg, steps_per_epoch=steps, epochs=10)._learning_rate
        assert float(rate(0)) == pytest.approx(3e-4)  # learning_rate / 10
        assert float(rate(steps)) == pytest.approx(3e-3)  # the peak after one epoch
        assert float(rate(steps * 5.5)) == pytest.approx(1.5e-3, rel=1e-3)  # half-way down
        assert float(rate(steps * 10)) == pytest.approx(0.0, abs=1e-9)  # zero at the end


def test_weight_decay_makes_adamw_and_spares_biases_and_batch_norm():
    cfg = load_params().train.optimizer
    assert cfg.weight_decay > 0
    optimizer = make_optimizer(cfg, 10, 10)
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert optimizer.weight_decay == pytest.approx(cfg.weight_decay)
    model = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 3), keras.layers.BatchNormalization()]
    )
    decayed = {v.name: optimizer._use_weight_decay(v) for v in model.trainable_variables}
    assert decayed == {"kernel": True, "bias": False, "gamma": False, "beta": False}
    seed = cfg.model_copy(update={"weight_decay": 0.0, "ema_momentum": 0.999})
    plain = make_optimizer(seed, 10, 10)
    assert type(plain) is keras.optimizers.Adam and plain.use_ema
    assert plain.ema_momentum == pytest.approx(0.999)


def test_plateau_schedule_starts_constant():
    cfg = load_params().train.optimizer.model_copy(update={"schedule": "plateau"})
    assert float(make_optimizer(cfg, 10, 10).learning_rate) == pytest.approx(cfg.learning_rate)
