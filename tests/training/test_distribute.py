"""Distributed training: strategy choice, batch and learning-rate arithmetic, and the real
`pipeline.train` under MirroredStrategy (two logical CPUs) and MultiWorkerMirroredStrategy
(two worker processes on 127.0.0.1), each killed and resumed."""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.common.processes import free_port
from pipeline.training import distribute, resume
from pipeline.training.distribute import Cluster, DistributeError
from tests.conftest import SHRUNK, _merge
from tests.projects import kill_when_trained, make_project, run

TWO_WORKERS = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}}


def _tf_config(index: int, task: str = "worker", **cluster: list[str]) -> str:
    return json.dumps(
        {"cluster": cluster or TWO_WORKERS["cluster"], "task": {"type": task, "index": index}}
    )


def test_no_tf_config_is_a_cluster_of_one_whose_process_is_the_chief():
    assert distribute.read_cluster(None) == Cluster(1, "worker", 0)
    assert distribute.read_cluster(None).is_chief


def test_worker_zero_is_the_chief_unless_the_cluster_names_one():
    assert distribute.read_cluster(_tf_config(0)).is_chief
    assert not distribute.read_cluster(_tf_config(1)).is_chief
    named = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"]}
    assert distribute.read_cluster(_tf_config(0, "chief", **named)).is_chief
    worker = distribute.read_cluster(_tf_config(0, "worker", **named))
    assert worker.tasks == 2 and not worker.is_chief


@pytest.mark.parametrize("text", ["not json", '{"cluster": {}}', '{"task": {"index": 0}}'])
def test_a_broken_tf_config_is_named(text):
    with pytest.raises(DistributeError, match="TF_CONFIG is not a cluster description"):
        distribute.read_cluster(text)


def test_batch_size_counts_globally_or_per_replica():
    assert distribute.batch_sizes(32, "global", 2) == (32, 16)
    assert distribute.batch_sizes(16, "replica", 2) == (32, 16)
    assert distribute.batch_sizes(20, "global", 1) == (20, 20)
    with pytest.raises(DistributeError, match=r"train.batch_size = 21 .* multiple of 2"):
        distribute.batch_sizes(21, "global", 2)


def test_learning_rate_scales_with_the_replicas_when_asked():
    assert distribute.learning_rate_scale("none", 4) == 1.0
    assert distribute.learning_rate_scale("linear", 4) == 4.0
    assert distribute.learning_rate_scale("sqrt", 4) == 2.0


def test_strategies_that_cannot_run_say_why(raw_params, monkeypatch):
    from pipeline.params import Params

    cfg = Params.model_validate(raw_params).train
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(DistributeError, match="needs TF_CONFIG describing a cluster"):
        distribute.configure(cfg, "multi_worker", 20)
    monkeypatch.setenv("TF_CONFIG", _tf_config(0))
    with pytest.raises(DistributeError, match=r"cluster of 2 tasks but train\.distribute = none"):
        distribute.configure(cfg, "none", 20)


def test_workers_that_would_resume_from_different_epochs_stop(tmp_path, monkeypatch):
    """A worker that cannot see the chief's state (another machine, no shared folder) would
    start from epoch 0 while the chief resumes: every worker stops, saying why."""
    monkeypatch.setattr(resume, "RESUME_DIR", tmp_path / ".resume/train")
    monkeypatch.setattr(resume, "ROOT", tmp_path)
    monkeypatch.setattr(distribute, "barrier", lambda strategy, value: (0, 2))
    dist = distribute.Distribution(None, "multi_worker", Cluster(2, "worker", 1), 2, 32, 16, 1.0)
    with pytest.raises(
        DistributeError, match=r"different epochs \(0 to 2.* worker 1.*\.resume/train"
    ):
        resume.start_from_chief_state(dist, tmp_path / ".resume/train-worker-1", "key")


# The real stage. Augmentation is off: its random draws are per replica, so with it two
# replicas would transform their halves of a batch differently from one device, and the
# comparison would measure augmentation, not the strategy. float32 makes it exact enough.
DISTRIBUTED = _merge(
    SHRUNK,
    {
        "train": {
            "epochs": 3,
            "early_stopping": {"patience": 10},
            "augmentation": {"rotation": 0.0, "zoom": 0.0, "translation": 0.0},
            "device": {"mixed_precision": "float32"},
            # batch statistics are each replica's own under a strategy (Keras' BatchNormalization
            # is not synchronized): without it, two replicas compute what one device does
            "model": {"batch_norm": False},
        }
    },
)
TWO_LOGICAL_CPUS = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from pipeline import train
from pipeline.common.log import run_stage
run_stage("train", train.main)
"""


@pytest.fixture(scope="module")
def single(tmp_path_factory, prepared) -> tuple[Path, dict[str, str], dict]:
    """The project trained on one device: its root, environment, weights and history."""
    root = tmp_path_factory.mktemp("distributed")
    env = make_project(root, DISTRIBUTED, prepared)
    output = run([sys.executable, "-m", "pipeline.train"], root, env, logs=True)
    assert "train: none (1 replica); batch 32 global, 32 per replica" in output
    trained = {
        "weights": keras.saving.load_model(root / "models/model.keras").get_weights(),
        "history": pd.read_csv(root / "reports/train/history.csv"),
        "run": json.loads((root / "models/mlflow_run.json").read_text())["run_id"],
    }
    return root, env, trained


def _set_train_params(root: Path, **changes: str) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"].update(changes)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _train(root: Path, env: dict[str, str], args: list[str], **extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=root,
        env={**env, **extra},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-5000:]
    return output


@pytest.mark.slow
def test_mirrored_over_two_cpus_matches_one_device_and_resumes_after_a_kill(single):
    root, env, one_device = single
    _set_train_params(root, distribute="mirrored")
    history = root / ".resume/train/history.csv"
    killed = _train(root, env, ["-c", TWO_LOGICAL_CPUS])
    assert 1 <= kill_when_trained([killed], history, epochs=1) < 3
    run_id = json.loads((root / ".resume/train/run.json").read_text())["run_id"]

    output = _finish(_train(root, env, ["-c", TWO_LOGICAL_CPUS]))
    assert "train: mirrored (2 replicas); batch 32 global, 16 per replica" in output
    assert f"resuming MLflow run {run_id}" in output
    table = pd.read_csv(root / "reports/train/history.csv")
    assert table["epoch"].tolist() == [1, 2, 3]
    for column in ("loss", "val_loss"):  # the same sums in another order: float round-off
        np.testing.assert_allclose(table[column], one_device["history"][column], rtol=2e-3)
    weights = keras.saving.load_model(root / "models/model.keras").get_weights()
    # all weights as one vector (a bias of four values is too small to hold to 5% by itself)
    mirrored = np.concatenate([w.ravel() for w in weights])
    alone = np.concatenate([w.ravel() for w in one_device["weights"]])
    assert np.linalg.norm(mirrored - alone) <= 0.05 * np.linalg.norm(alone)

    run_ = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(run_id)
    assert run_.info.status == "FINISHED"
    expected = {"train.strategy": "mirrored", "train.replicas": "2", "train.workers": "1"}
    expected |= {"train.batch_size_global": "32", "train.batch_size_per_replica": "16"}
    assert expected.items() <= run_.data.params.items()
    assert run_.data.params["train.distribute"] == "mirrored"


@pytest.mark.slow
def test_two_workers_on_loopback_train_one_model_into_one_run_and_resume(single):
    """MultiWorkerMirroredStrategy from TF_CONFIG (`auto`), 16 images per replica and the
    learning rate scaled by the 2 replicas; both workers killed after an epoch, restarted."""
    root, env, _ = single
    _set_train_params(root, distribute="auto", batch_size=16, batch_size_scope="replica")
    _set_train_params(root, scale_learning_rate="linear")
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs_before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))

    def workers() -> list[subprocess.Popen]:
        ports = [free_port(), free_port()]
        hosts = [f"127.0.0.1:{port}" for port in ports]
        return [
            _train(root, env, ["-m", "pipeline.train"], TF_CONFIG=_tf_config(i, worker=hosts))
            for i in range(2)
        ]

    assert 1 <= kill_when_trained(workers(), root / ".resume/train/history.csv", epochs=1) < 3
    run_id = json.loads((root / ".resume/train/run.json").read_text())["run_id"]
    chief, other = (_finish(p) for p in workers())  # both stop on their own

    assert "multi_worker (2 replicas, 2 workers; this is worker 0 (chief))" in chief
    assert f"resuming MLflow run {run_id}" in chief
    assert "worker 1); batch 32 global, 16 per replica: done; the chief saves" in other
    assert "MLflow run" not in other
    assert json.loads((root / "models/mlflow_run.json").read_text())["run_id"] == run_id
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == runs_before + 1  # one run, for the chief
    run_ = client.get_run(run_id)
    assert run_.info.status == "FINISHED"
    assert run_.data.params["train.strategy"] == "multi_worker"
    assert run_.data.params["train.workers"] == "2"
    assert run_.data.params["train.learning_rate_scale"] == "2.0"
    phases = pd.read_csv(root / "reports/train/phases.csv")
    rate = yaml.safe_load((root / "params.yaml").read_text())["train"]["optimizer"]["learning_rate"]
    assert phases["learning_rate"].tolist() == pytest.approx([2 * rate])  # linear, 2 replicas
    assert pd.read_csv(root / "reports/train/history.csv")["epoch"].tolist() == [1, 2, 3]
    # nothing left behind but each state folder's lock file (empty of state, kept: see
    # common.files.single_writer)
    left = sorted(p.name for p in (root / ".resume").iterdir())
    assert left == ["train-worker-1.lock", "train.lock"]
