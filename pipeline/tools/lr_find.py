"""`make lr-find`: the learning-rate range test (Smith 2017, as fastai's `lr_find`) on the split.

The model train would build (params.yaml: architecture, input, batch, loss, optimizer and
weight decay) takes `--steps` training steps with the learning rate rising geometrically from
`--start` to `--end`; the loss of every step is recorded, smoothed, and the test stops early
once it exceeds four times its minimum. The suggestion is the rate at the smoothed loss's
minimum divided by ten (where the loss still falls steadily, a safe peak for the one-cycle
`warmup_cosine` schedule); the steepest descent is reported beside it. The picture and the
table go to reports/lr_find/; nothing else is written (train.optimizer.learning_rate is
yours to set, e.g. `dvc exp run -S train.optimizer.learning_rate=...`).
"""

import argparse
import logging
from dataclasses import replace

import keras
import numpy as np
import pandas as pd

from pipeline.common.files import write_csv, write_json
from pipeline.common.log import PipelineError, run_stage
from pipeline.contracts import read_labels
from pipeline.imagedata.dataset import read_split
from pipeline.params import load_params
from pipeline.paths import LABELS_FILE, REPORTS_DIR, ROOT
from pipeline.reporting.plots import lr_find_figure, save_figure
from pipeline.tracking import registry
from pipeline.training import distribute
from pipeline.training.devices import configure_devices
from pipeline.training.fitting import Plan, build_network, resolved_settings, training_inputs
from pipeline.training.optimizer import make_optimizer

log = logging.getLogger(__name__)

LR_FIND_DIR = REPORTS_DIR / "lr_find"
SMOOTHING = 0.9  # exponential moving average of the step losses (fastai's beta 0.98 is for
# longer tests; 0.9 follows a 100-step test without lagging its divergence)
DIVERGED = 4.0  # stop once the smoothed loss is this many times its minimum


class StepLosses(keras.callbacks.Callback):
    """Each step's own loss (Keras logs the epoch's running mean: the step's loss is the
    difference of consecutive sums) and learning rate; stops the fit when the loss diverges."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.smoothed = 0.0
        self.best = np.inf  # the lowest smoothed loss so far

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        mean = float(logs["loss"])
        previous = self.rows[-1]["running_mean"] * batch if self.rows else 0.0
        loss = mean * (batch + 1) - previous
        self.smoothed = SMOOTHING * self.smoothed + (1 - SMOOTHING) * loss
        smoothed = self.smoothed / (1 - SMOOTHING ** (batch + 1))  # bias-corrected
        rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.rows.append(
            {
                "step": batch + 1,
                "learning_rate": rate,
                "loss": loss,
                "smoothed_loss": smoothed,
                "running_mean": mean,
            }
        )
        self.best = min(self.best, smoothed)
        if not np.isfinite(smoothed) or (batch > 10 and smoothed > DIVERGED * self.best):
            self.model.stop_training = True


def suggest(table: pd.DataFrame) -> dict[str, float]:
    """The rate at the smoothed loss's minimum, a tenth of it (the suggestion) and the rate
    of the steepest descent of the smoothed loss against log(rate)."""
    if len(table) < 10:
        raise PipelineError(f"the range test stopped after {len(table)} steps: too few to read")
    lowest = table.loc[table["smoothed_loss"].idxmin()]
    upto = table[table["step"] <= lowest["step"]]
    slope = np.gradient(upto["smoothed_loss"].to_numpy(), np.log(upto["learning_rate"]))
    steepest = float(upto["learning_rate"].iloc[int(np.argmin(slope))])
    return {
        "minimum_loss_rate": float(lowest["learning_rate"]),
        "suggested_learning_rate": float(lowest["learning_rate"]) / 10,
        "steepest_descent_rate": steepest,
    }


def range_test(steps: int, start: float, end: float) -> tuple[pd.DataFrame, dict]:
    """Train the configured model `steps` steps at geometrically rising rates."""
    params = registry.local_transfer_weights(load_params())  # an MLflow URI: a local file
    rows = read_split("train"), read_split("validation")
    classes = read_labels(LABELS_FILE).classes
    params, settings, gpus = resolved_settings(params, rows, classes)
    cfg = params.train
    plan = Plan(cfg, replace(settings, distribute="none"), params.base.seed)
    setup = configure_devices(settings.precision, settings.jit_compile, gpus)
    dist = distribute.configure(cfg, plan.settings.distribute, settings.batch_size)
    keras.utils.set_random_seed(params.base.seed)
    inputs = training_inputs(plan, dist, classes, rows, "lr-find", LR_FIND_DIR)
    model = build_network(plan, len(classes), dist.strategy).model
    optimizer = make_optimizer(cfg.optimizer.model_copy(update={"schedule": "constant"}), 1, 1)
    optimizer.learning_rate = keras.optimizers.schedules.ExponentialDecay(
        start, decay_steps=steps, decay_rate=end / start
    )  # rising: the rate is start * (end / start) ** (step / steps)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
        jit_compile=setup.jit_compile,
    )
    losses = StepLosses()
    model.fit(inputs.train_data(0), steps_per_epoch=steps, epochs=1, callbacks=[losses], verbose=0)
    table = pd.DataFrame(losses.rows).drop(columns="running_mean")
    about = {
        "steps_run": len(table),
        "batch_size": settings.batch_size,
        "start": start,
        "end": end,
        "input": settings.input_why,
    }
    return table, about | suggest(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="training steps (default 100)")
    parser.add_argument("--start", type=float, default=1e-5, help="first rate (default 1e-5)")
    parser.add_argument("--end", type=float, default=1.0, help="last rate (default 1)")
    args = parser.parse_args()
    if not 0 < args.start < args.end:
        raise PipelineError(f"--start {args.start} must be above 0 and below --end {args.end}")
    table, found = range_test(args.steps, args.start, args.end)
    write_csv(table, LR_FIND_DIR / "lr_find.csv")
    write_json(LR_FIND_DIR / "lr_find.json", found)
    save_figure(lr_find_figure(table, found), LR_FIND_DIR / "lr_find.png")
    configured = load_params().train.optimizer.learning_rate
    print(
        f"suggested learning rate {found['suggested_learning_rate']:.2g} (a tenth of "
        f"{found['minimum_loss_rate']:.2g}, where the loss is lowest; steepest descent at "
        f"{found['steepest_descent_rate']:.2g}); params.yaml has {configured:g}\n"
        f"picture: {(LR_FIND_DIR / 'lr_find.png').relative_to(ROOT)}; try it: dvc exp run -S "
        f"train.optimizer.learning_rate={found['suggested_learning_rate']:.2g}"
    )


if __name__ == "__main__":
    run_stage("lr_find", main)
