"""training.fitting: class weights and the optimizer's learning-rate schedules."""

import keras
import pytest

from pipeline.params import load_params
from pipeline.training.fitting import class_weights, make_optimizer


def test_balanced_class_weights_favour_the_rare_class():
    weights = class_weights([0, 0, 0, 1], num_classes=3, mode="balanced")
    assert weights[1] == pytest.approx(3 * weights[0])
    assert weights[2] == 1.0  # absent from training: neutral
    assert class_weights([0, 1], 2, "none") is None


@pytest.mark.parametrize(
    ("schedule", "kind"),
    [
        ("inverse_time", keras.optimizers.schedules.InverseTimeDecay),
        ("cosine", keras.optimizers.schedules.CosineDecay),
    ],
)
def test_schedules(schedule, kind):
    cfg = load_params().train.optimizer.model_copy(update={"schedule": schedule})
    optimizer = make_optimizer(cfg, total_steps=100)
    assert isinstance(optimizer._learning_rate, kind)


def test_the_seed_schedule_decays_per_step_as_the_article_did():
    cfg = load_params().train.optimizer
    rate = make_optimizer(cfg, 100)._learning_rate
    assert float(rate(1000)) == pytest.approx(1e-3 / (1 + 1e-3 * 1000))


def test_plateau_schedule_starts_constant():
    cfg = load_params().train.optimizer.model_copy(update={"schedule": "plateau"})
    assert float(make_optimizer(cfg, 100).learning_rate) == pytest.approx(1e-3)
