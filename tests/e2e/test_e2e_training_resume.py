"""Training in the `validated` project: deterministic on CPU, and a killed training (plain or
a transfer schedule) resumes in the same MLflow run."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.e2e.conftest import edited_params
from tests.projects import kill_when_trained
from tests.projects import run as _run

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _validated_left_as_trained(validated, trained, restore) -> None:
    """Every test here trains in the one shared `validated` project: what it writes there (a
    model and its reports, a resume backup, a data cache, MLflow runs, files it adds) is put
    back as `trained` left it, so that the tests pass in any order."""
    root, _ = validated
    restore(
        root / "params.yaml",
        root / "earlier.keras",
        root / "transfer_blocks.json",
        root / ".resume",
        root / ".cache",
        root / "models",
        root / "reports/train",
        root / "mlflow.db",
        root / "mlartifacts",
    )


def _weights(path: Path) -> list:
    import keras

    return keras.saving.load_model(path, safe_mode=True).get_weights()


def test_two_cpu_runs_with_the_same_params_give_identical_weights(validated, trained):
    root, env = validated
    first = _weights(trained[0])
    _run([sys.executable, "-m", "pipeline.train"], root, env, logs=True)
    second = _weights(root / "models/model.keras")
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert (a == b).all()


def _kill_training_after(root: Path, env: dict[str, str], epochs: int) -> int:
    """Start `pipeline.train` and SIGKILL it once `epochs` epochs are done; return how many
    it had finished."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.train"],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return kill_when_trained([process], root / ".resume/train/history.csv", epochs)


def test_killed_training_resumes_in_the_same_run(validated, trained):
    root, env = validated
    uninterrupted = trained[1]

    done_before = _kill_training_after(root, env, epochs=2)
    killed_run = json.loads((root / ".resume/train/run.json").read_text())["run_id"]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    name = client.get_run(killed_run).info.run_name
    assert 2 <= done_before < 6

    output = _run([sys.executable, "-m", "pipeline.train"], root, env, logs=True)
    assert f"resuming MLflow run {killed_run}" in output
    assert json.loads((root / "models/mlflow_run.json").read_text())["run_id"] == killed_run
    table = pd.read_csv(root / "reports/train/history.csv")
    assert table["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    resumed = json.loads((root / "reports/train/metrics.json").read_text())
    assert resumed["epochs_run"] == 6
    # the backup holds the random layers' seed states too: the resumed run trains to exactly
    # the weights the uninterrupted run reached (a tolerance here hid fresh augmentations)
    for key in ("best_epoch", "best_val_accuracy", "best_val_loss"):
        assert resumed[key] == uninterrupted[key], key
    run = client.get_run(killed_run)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == name  # the resume kept the run's name
    steps = sorted({m.step for m in client.get_metric_history(killed_run, "val_loss")})
    assert steps == [1, 2, 3, 4, 5, 6]
    assert not (root / ".resume/train").exists()


def test_transfer_schedule_resumes_inside_its_second_phase(validated, trained):
    """Transfer from an earlier model of the pipeline with a manual two-phase schedule; killed
    in phase 2, the resumed run finishes that phase with its blocks and learning rate."""
    root, env = validated
    shutil.copy(trained[0], root / "earlier.keras")
    transfer = dict(
        base="pipeline",
        weights="earlier.keras",
        dense_units=[16],
        schedule="manual",
        phases=[
            {"epochs": 2, "unfreeze": 0, "learning_rate": 0.01},
            {"epochs": 3, "unfreeze": 2, "learning_rate": 0.001},
        ],
    )
    with edited_params(root, {"train": {"transfer": transfer}}):  # the others train as before
        assert 3 <= _kill_training_after(root, env, epochs=3) < 5  # killed inside phase 2
        killed_run = json.loads((root / ".resume/train/run.json").read_text())["run_id"]

        output = _run([sys.executable, "-m", "pipeline.train"], root, env, logs=True)
    assert f"resuming MLflow run {killed_run}" in output
    assert "phase 2 (2 of 2 blocks unfrozen) ended after epoch 5" in output
    phases = pd.read_csv(root / "reports/train/phases.csv")
    assert phases["unfrozen_blocks"].tolist() == [0, 2]
    assert phases["first_epoch"].tolist() == [1, 3] and phases["last_epoch"].tolist() == [2, 5]
    assert phases["trainable_params"].iloc[0] < phases["trainable_params"].iloc[1]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])

    def by_step(metric: str) -> list[float]:
        points = {m.step: m.value for m in client.get_metric_history(killed_run, metric)}
        return [points[step] for step in sorted(points)]

    assert by_step("unfrozen_blocks") == [0, 0, 2, 2, 2]
    # each phase has its own warm-up and cosine at its rate (logged at each epoch's end): the
    # peak after one epoch, zero at the phase's last; the resumed phase 2 goes on in step
    assert by_step("learning_rate") == pytest.approx([0.01, 0, 0.001, 0.0005, 0], abs=1e-6)
    assert len(set(by_step("trainable_params"))) == 2
    run = client.get_run(killed_run)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.transfer.base"] == "pipeline"
    artifacts = {a.path for a in client.list_artifacts(killed_run, "reports/train")}
    assert {"reports/train/phases.csv", "reports/train/phases.json"} <= artifacts
    saved = client.download_artifacts(killed_run, "transfer_blocks.json", str(root))
    blocks = json.loads(Path(saved).read_text())
    assert list(blocks) == ["block1", "block2"]
    assert not (root / ".resume/train").exists()
