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


def test_sigterm_marks_the_run_killed(store, tmp_path):
    """A run killed by SIGTERM (a scheduler, `kill`, a CI timeout) never stays RUNNING."""
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
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) != 0
    assert MlflowClient(store).get_run(run_id).info.status == "KILLED"
