"""Several processes writing to one SQLite store at once: every run and metric recorded."""

import os
import sqlite3
import subprocess
import sys
import time

from mlflow.tracking import MlflowClient

from pipeline.paths import ROOT

WRITER = """
import sys
import mlflow
from pipeline.tracking import store

print("ready", flush=True)
sys.stdin.readline()  # go
experiment = store.configure()
with store.tracked_run(experiment, run_name=sys.argv[1]):
    mlflow.log_params({f"p{i}": i for i in range(20)})
    for step in range(int(sys.argv[2])):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.set_tag(f"t{step % 5}", str(step))
"""


def test_concurrent_writers_wait_out_a_locked_store_and_lose_nothing(tmp_path):
    """Three writers log at once while another process holds SQLite's write lock for longer
    than SQLite's busy timeout (5 s): without retries their calls fail with "database is
    locked"; with them, every run, param and metric step is there."""
    writers, steps = 3, 15
    database = tmp_path / "mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{database}"}
    subprocess.run(
        [sys.executable, "-c", "from pipeline.tracking import store; store.configure()"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    processes = []
    for n in range(writers):
        process = subprocess.Popen(
            [sys.executable, "-c", WRITER, f"writer-{n}", str(steps)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        processes.append(process)
    for process in processes:  # imports done: what follows is all database work
        assert process.stdout.readline().strip() == "ready"
    blocker = sqlite3.connect(database, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    time.sleep(8)  # more than SQLite's 5-s busy timeout
    blocker.execute("COMMIT")
    blocker.close()
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0] * writers, "\n".join(outputs)

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    [experiment] = [e for e in client.search_experiments() if e.name != "Default"]
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"writer-{n}" for n in range(writers)]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert len(run.data.params) == 20
        history = client.get_metric_history(run.info.run_id, "loss")
        assert sorted(m.step for m in history) == list(range(steps))
