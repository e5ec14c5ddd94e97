"""tools.lr_find: the learning-rate range test's step losses and its suggestion."""

import keras
import numpy as np
import pandas as pd
import pytest

from pipeline.common.log import PipelineError
from pipeline.tools.lr_find import StepLosses, suggest


def test_step_losses_are_each_steps_own_loss_not_the_running_mean():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype("float32") * np.repeat([1, 5, 1, 9], 10)[:, None]
    y = np.eye(2, dtype="float32")[rng.integers(0, 2, 40)]
    losses = StepLosses()
    model.fit(x, y, batch_size=10, epochs=1, shuffle=False, callbacks=[losses], verbose=0)
    expected = [model.evaluate(x[i : i + 10], y[i : i + 10], verbose=0) for i in range(0, 40, 10)]
    np.testing.assert_allclose([row["loss"] for row in losses.rows], expected, rtol=1e-4)
    assert len({round(loss, 3) for loss in expected}) == 4  # four different batches


def test_the_suggestion_is_a_tenth_of_the_lowest_loss_rate():
    rates = np.geomspace(1e-5, 1, 50)
    loss = 2 - np.log10(rates / 1e-5) * 0.3  # falls ...
    loss[rates > 1e-2] = 2 - 3 * 0.3 + (np.log10(rates[rates > 1e-2] / 1e-2)) * 2  # ... rises
    table = pd.DataFrame({"step": range(1, 51), "learning_rate": rates, "smoothed_loss": loss})
    found = suggest(table)
    lowest = rates[rates <= 1e-2][-1]
    assert found["minimum_loss_rate"] == pytest.approx(lowest)
    assert found["suggested_learning_rate"] == pytest.approx(lowest / 10)
    with pytest.raises(PipelineError, match="stopped after 3 steps"):
        suggest(table.head(3))
