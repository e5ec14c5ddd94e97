"""Everything that talks to MLflow: where runs go, what a run holds, how it ends.

One MLflow run per trained model: `train` creates it and writes its id to `models/`, and
`evaluate` adds the test metrics and reports to the same run.
"""

import json
import os
import signal
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import keras
import mlflow
from mlflow.entities import RunStatus

from pipeline.paths import MLFLOW_ARTIFACTS, MLFLOW_DB

DEFAULT_EXPERIMENT = "image-classification"


def default_tracking_uri() -> str:
    return f"sqlite:///{MLFLOW_DB}"


def configure() -> str:
    """Point MLflow at `MLFLOW_TRACKING_URI` or the project SQLite store; return the experiment.

    The experiment is created with an explicit artifact folder, so artifacts land beside the
    database instead of wherever the process happens to run.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = MLFLOW_ARTIFACTS.as_uri() if uri.startswith("sqlite:") else None
    return mlflow.create_experiment(name, artifact_location=location)


def flatten_params(params: Mapping, prefix: str = "") -> dict[str, str]:
    """Nested params to dotted keys; lists stay whole (as JSON) so every run has the same keys."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return flat


class _Terminated(Exception):
    """SIGTERM turned into an exception so the run can be closed as KILLED."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated(f"terminated by signal {signum}")


@contextmanager
def tracked_run(
    experiment_id: str, run_id: str | None = None, run_name: str | None = None
) -> Iterator[mlflow.ActiveRun]:
    """Start (or re-open) a run that never stays RUNNING: an error ends it FAILED,
    Ctrl-C or SIGTERM ends it KILLED."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    run = mlflow.start_run(run_id=run_id, experiment_id=experiment_id, run_name=run_name)
    try:
        yield run
    except (KeyboardInterrupt, _Terminated):
        mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
        raise
    except BaseException:
        mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
        raise
    else:
        mlflow.end_run(RunStatus.to_string(RunStatus.FINISHED))
    finally:
        signal.signal(signal.SIGTERM, previous)


class EpochMetrics(keras.callbacks.Callback):
    """Log every epoch's training and validation metrics and learning rate, with the epoch
    number counted from 1 (as Keras prints it) as the step."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        # Added to `logs` too, so Keras' History (which runs after this) records it as well.
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        mlflow.log_metrics({name: float(value) for name, value in logs.items()}, step=epoch + 1)


def run_exists(run_id: str) -> bool:
    """Whether the tracking store still holds this run (a store can be reset between runs)."""
    try:
        mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return False
    return True


def read_run_id(path: Path) -> str:
    """The run id `train` recorded for its model."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))["run_id"]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing: run the train stage first") from None
