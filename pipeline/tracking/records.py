"""Reading back what the store recorded: one run's params, metrics and tags, its artifacts,
and the experiment's runs as a table (`make compare`, `make reproduce`)."""

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from pipeline.common.log import PipelineError
from pipeline.tracking import store


class RunNotFoundError(PipelineError, LookupError):
    """The store has no such run, or the run lacks the artifact asked for."""


@dataclass(frozen=True)
class RecordedRun:
    run_id: str
    name: str
    experiment_id: str
    experiment: str
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or store.default_tracking_uri()


def recorded_run(run_id: str) -> RecordedRun:
    store.configure()
    client = MlflowClient(tracking_uri())
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise RunNotFoundError(
            f"no run {run_id!r} in the tracking store {tracking_uri()}"
        ) from None
    return RecordedRun(
        run_id=run.info.run_id,
        name=run.info.run_name,
        experiment_id=run.info.experiment_id,
        experiment=client.get_experiment(run.info.experiment_id).name,
        metrics=dict(run.data.metrics),
        params=dict(run.data.params),
        tags=dict(run.data.tags),
    )


def download_artifact(run_id: str, path: str, target: Path) -> Path:
    """One artifact (file or folder) of a run into `target`; its local path."""
    try:
        local = MlflowClient(tracking_uri()).download_artifacts(run_id, path, str(target))
    except mlflow.exceptions.MlflowException:
        raise RunNotFoundError(f"run {run_id} has no {path} artifact") from None
    return Path(local)


def mark_reproduction(new_id: str, original: RecordedRun, report: str) -> None:
    """Tie a reproduction's run to the run it redid, with the side-by-side report."""
    client = MlflowClient(tracking_uri())
    client.set_tag(new_id, "reproduces", original.run_id)
    client.update_run(new_id, name=f"reproduce {original.name}")
    client.log_text(new_id, report, "lineage/reproduction.md")


def search_runs(name_prefix: str, include_unfinished: bool, last: int) -> tuple[str, pd.DataFrame]:
    """The experiment's name and its newest `last` runs (finished ones only unless
    `include_unfinished`), optionally only those whose name starts with `name_prefix`."""
    experiment_id = store.configure()
    experiment = mlflow.get_experiment(experiment_id).name
    filters = [] if include_unfinished else ["attributes.status = 'FINISHED'"]
    if name_prefix:
        filters.append(f"attributes.run_name LIKE '{name_prefix.replace(chr(39), '')}%'")
    runs = mlflow.search_runs(
        [experiment_id],
        filter_string=" AND ".join(filters),
        max_results=last,
        output_format="pandas",
    )  # newest first
    return experiment, runs


def copy_params(run_id: str, target: Path, scratch: Path) -> None:
    """The run's params.yaml artifact to `target`."""
    shutil.copyfile(download_artifact(run_id, "params.yaml", scratch), target)
