import os
import signal
import subprocess
import sys

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from pipeline.paths import ROOT
from pipeline.tracking import store as tracking


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setattr(tracking, "MLFLOW_ARTIFACTS", tmp_path / "artifacts")
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


def test_runs_end_finished(store):
    experiment = tracking.configure()
    with tracking.tracked_run(experiment) as run:
        mlflow.log_metric("x", 1)
    assert MlflowClient(store).get_run(run.info.run_id).info.status == "FINISHED"


def test_a_crash_marks_the_run_failed(store):
    experiment = tracking.configure()
    with pytest.raises(RuntimeError), tracking.tracked_run(experiment) as run:
        raise RuntimeError("boom")
    assert MlflowClient(store).get_run(run.info.run_id).info.status == "FAILED"


def test_ctrl_c_marks_the_run_killed(store):
    experiment = tracking.configure()
    with pytest.raises(KeyboardInterrupt), tracking.tracked_run(experiment) as run:
        raise KeyboardInterrupt
    assert MlflowClient(store).get_run(run.info.run_id).info.status == "KILLED"


def test_experiment_artifacts_go_beside_the_store(store, tmp_path):
    experiment = tracking.configure()
    location = MlflowClient(store).get_experiment(experiment).artifact_location
    assert location == (tmp_path / "artifacts").as_uri()


def test_run_exists(store):
    experiment = tracking.configure()
    with tracking.tracked_run(experiment) as run:
        pass
    assert tracking.run_exists(run.info.run_id)
    assert not tracking.run_exists("0" * 32)


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_mark_the_run_killed(store, tmp_path, number):
    """A run killed by SIGTERM (a scheduler, `kill`, a CI timeout) or SIGHUP (a closed
    terminal or SSH link) never stays RUNNING."""
    script = (
        "import sys, time\n"
        "from pipeline.tracking import store as tracking\n"
        "with tracking.tracked_run(tracking.configure()) as run:\n"
        "    print(run.info.run_id, flush=True)\n"
        "    time.sleep(60)\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    process = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    run_id = process.stdout.readline().strip()
    process.send_signal(number)
    assert process.wait(timeout=60) != 0
    assert MlflowClient(store).get_run(run_id).info.status == "KILLED"


def _finished_run() -> str:
    with tracking.tracked_run(tracking.configure()) as run:
        mlflow.log_metric("val_accuracy", 0.9)
    return run.info.run_id


@pytest.mark.parametrize(
    ("fault", "tag"),
    [
        (RuntimeError("no pictures"), "failed: RuntimeError: no pictures"),
        (KeyboardInterrupt(), "killed"),
    ],
)
def test_a_later_stage_that_fails_leaves_the_training_run_finished(store, fault, tag):
    run_id = _finished_run()
    with pytest.raises(type(fault)), tracking.added_to_run(run_id, "visualize") as client:
        client.log_metric(run_id, "visualize_layers", 3)
        raise fault
    run = MlflowClient(store).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["visualize.status"] == tag
    assert run.data.metrics["visualize_layers"] == 3


def test_a_later_stage_killed_outright_never_leaves_the_run_running(store, tmp_path):
    """SIGKILL in the middle of evaluate's logging: nothing can run, and yet the training's
    run is FINISHED; only the stage's tag says it did not finish."""
    run_id = _finished_run()
    script = (
        "import sys, time\n"
        "from pipeline.tracking import store as tracking\n"
        "tracking.configure()\n"
        f"with tracking.added_to_run({run_id!r}, 'evaluate'):\n"
        "    print('in', flush=True)\n"
        "    time.sleep(60)\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    process = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "in"
    process.kill()
    process.wait(timeout=60)
    run = MlflowClient(store).get_run(run_id)
    assert (run.info.status, run.data.tags["evaluate.status"]) == ("FINISHED", "running")


def test_a_stale_backups_run_is_ended_killed_and_a_finished_one_left_alone(store):
    client = MlflowClient(store)
    experiment = tracking.configure()
    left = client.create_run(experiment)  # a training SIGKILLed: RUNNING for ever
    tracking.end_stale_run(left.info.run_id)
    assert client.get_run(left.info.run_id).info.status == "KILLED"
    finished = _finished_run()
    tracking.end_stale_run(finished)
    assert client.get_run(finished).info.status == "FINISHED"
    tracking.end_stale_run("0" * 32)  # gone from the store: nothing to do
