"""Where MLflow runs go and how a run ends: the tracking store (SQLite that waits out locks,
or a server), the experiment, and runs that never stay RUNNING."""

import fcntl
import functools
import inspect
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import mlflow
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from pipeline.paths import MLFLOW_ARTIFACTS, MLFLOW_DB

DEFAULT_EXPERIMENT = "image-classification"


def default_tracking_uri() -> str:
    return f"sqlite:///{MLFLOW_DB}"


LOCKED_RETRY_SECONDS = 600.0  # how long one store call keeps retrying a locked SQLite file


def is_locked(error: BaseException) -> bool:
    """SQLite's answer when another process holds the write lock (or a read snapshot it
    needs): the call did nothing and can be made again."""
    return "database is locked" in str(error) or "database table is locked" in str(error)


def retry_when_locked(method: Callable) -> Callable:
    """The store method, re-run (with growing, jittered pauses) while SQLite says the
    database is locked. Each store method is one transaction, rolled back on that error, so
    a retry neither loses nor doubles what it writes."""

    @functools.wraps(method)
    def retrying(*args, **kwargs):
        deadline = time.monotonic() + LOCKED_RETRY_SECONDS
        pause = 0.05
        while True:
            try:
                return method(*args, **kwargs)
            except Exception as error:
                if not is_locked(error) or time.monotonic() > deadline:
                    raise
                time.sleep(pause * (0.5 + random.random()))
                pause = min(pause * 2, 2.0)

    return retrying


@functools.cache
def _retrying(store_class: type) -> type:
    """A subclass of an MLflow SQL store whose every public method retries locked calls."""
    methods = {
        name: retry_when_locked(member)
        for name, member in inspect.getmembers(store_class, inspect.isfunction)
        if not name.startswith("_")
    }
    return type(f"Retrying{store_class.__name__}", (store_class,), methods)


def _with_retries(build: Callable) -> Callable:
    """MLflow's own store builder, its store turned into the retrying subclass (which adds
    no state, only the retries)."""

    def builder(*args, **kwargs):
        store = retry_when_locked(build)(*args, **kwargs)  # opening it reads the tables
        store.__class__ = _retrying(type(store))
        return store

    return builder


def use_retrying_sqlite_stores() -> None:
    """Make MLflow open `sqlite:` stores (runs and model registry) through classes that wait
    out locks: several pipelines (`dvc queue start -j 2`) write to one file at once, and
    SQLite lets one writer in at a time. MLflow's plugin registries are the hook."""
    from mlflow.tracking._model_registry import utils as registry
    from mlflow.tracking._tracking_service import utils as runs

    runs._tracking_store_registry.register("sqlite", _with_retries(runs._get_sqlalchemy_store))
    registry._get_store_registry().register("sqlite", _with_retries(registry._get_sqlalchemy_store))


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """For an SQLite store: one process at a time creates the database and its experiment
    (two first runs at once would both try to create the tables)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri.removeprefix("sqlite:///").split("?")[0])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def configure() -> str:
    """Point MLflow at `MLFLOW_TRACKING_URI` or the project SQLite store; return the experiment.

    The experiment is created with an explicit artifact folder, so artifacts land beside the
    database instead of wherever the process happens to run.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    use_retrying_sqlite_stores()
    mlflow.set_tracking_uri(uri)
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT)
    with store_lock(uri):
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = MLFLOW_ARTIFACTS.as_uri() if uri.startswith("sqlite:") else None
        try:
            return mlflow.create_experiment(name, artifact_location=location)
        except mlflow.exceptions.MlflowException as error:
            # another pipeline created it a moment ago (on a server the file lock cannot help)
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return mlflow.get_experiment_by_name(name).experiment_id


class _Terminated(Exception):
    """SIGTERM or SIGHUP turned into an exception so the run can be closed as KILLED."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated(f"terminated by signal {signum}")


ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # `kill`, and a closed terminal or SSH link


@contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP raise `_Terminated` in the main thread while inside."""
    previous = {number: signal.signal(number, _raise_terminated) for number in ENDING_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextmanager
def tracked_run(
    experiment_id: str, run_id: str | None = None, run_name: str | None = None
) -> Iterator[mlflow.ActiveRun]:
    """Start (or re-open) a run that never stays RUNNING: an error ends it FAILED,
    Ctrl-C, SIGTERM or SIGHUP ends it KILLED."""
    with signals_raise():
        run = mlflow.start_run(run_id=run_id, experiment_id=experiment_id, run_name=run_name)
        try:
            yield run
        except (KeyboardInterrupt, _Terminated):
            mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
            raise
        except BaseException:
            mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
            raise
        mlflow.end_run(RunStatus.to_string(RunStatus.FINISHED))


@contextmanager
def added_to_run(run_id: str, stage: str) -> Iterator[MlflowClient]:
    """A client to add a later stage's results (evaluate, visualize) to a model's finished
    run without re-opening it: the run keeps the status its training ended with, whatever
    happens here. The stage's own outcome is the run's tag `<stage>.status`: running, then
    finished, killed (Ctrl-C, SIGTERM, SIGHUP) or failed with the error; a SIGKILL leaves
    `running` on the tag, never the run RUNNING."""
    client = MlflowClient()
    key = f"{stage}.status"
    client.set_tag(run_id, key, "running")
    try:
        with signals_raise():
            yield client
    except (KeyboardInterrupt, _Terminated):
        client.set_tag(run_id, key, "killed")
        raise
    except BaseException as error:
        client.set_tag(run_id, key, f"failed: {error.__class__.__name__}: {error}"[:500])
        raise
    client.set_tag(run_id, key, "finished")


def end_stale_run(run_id: str) -> None:
    """A run left RUNNING by a killed training whose backup is being discarded: ended
    KILLED (a run that ended otherwise is left as it is)."""
    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return
    if run.info.status == RunStatus.to_string(RunStatus.RUNNING):
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))


def run_exists(run_id: str) -> bool:
    """Whether the tracking store still holds this run (a store can be reset between runs)."""
    try:
        mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return False
    return True
