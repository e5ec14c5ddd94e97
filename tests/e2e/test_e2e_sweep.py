"""`make sweep`: queued DVC experiments run at the same time into one MLflow store."""

import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.projects import make_project
from tests.projects import run as _run

pytestmark = pytest.mark.slow


def test_a_two_point_sweep_runs_at_once_into_the_project_store(tmp_path, prepared):
    """`make sweep`: a grid of two `train.epochs` values queued as DVC experiments and run by
    `dvc queue start -j 2` in temporary copies at the same time; with no MLFLOW_TRACKING_URI
    set, both record into the project's own SQLite store, in full, each MLflow run named after
    its DVC experiment; the sweep ends by ranking them as `make compare` does."""
    from tests.conftest import FLOAT_EXPORTS, SHRUNK

    root = tmp_path / "queued"
    root.mkdir()
    env = make_project(root, SHRUNK | FLOAT_EXPORTS, prepared)
    del env["MLFLOW_TRACKING_URI"]
    (root / "grid.yaml").write_text("train.epochs: [1, 2]\n")
    sweep = [
        sys.executable,
        "-m",
        "pipeline.tools.sweep",
        "grid.yaml",
        "--jobs",
        "2",
        "--poll",
        "2",
    ]
    result = subprocess.run(sweep, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    logs = "".join(p.read_text() for p in (root / ".dvc/tmp/exps/celery").glob("*.out"))
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{logs[-5000:]}"
    [prefix] = {
        line.split()[2].rsplit("-", 1)[0]
        for line in result.stdout.splitlines()
        if line.startswith("sweep: queued ")
    }
    assert prefix.startswith("grid-")
    names = {f"{prefix}-1": 1, f"{prefix}-2": 2}
    assert f"sweep: {prefix}-1: Success" in result.stdout

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    [experiment] = [e for e in client.search_experiments() if e.name != "Default"]
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == sorted(names)  # named after the DVC experiments
    for name, epochs in names.items():
        run = runs[name]
        assert run.info.status == "FINISHED"
        assert run.data.tags["dvc_experiment"] == name
        assert run.data.params["train.epochs"] == str(epochs)
        history = client.get_metric_history(run.info.run_id, "val_loss")
        assert [m.step for m in history] == list(range(1, epochs + 1))
        for metric in ("test_accuracy", "test_macro_f1", "weight_sharing_cnn_params"):
            assert metric in run.data.metrics
        assert client.list_artifacts(run.info.run_id, "reports/evaluate")
    versions = client.search_model_versions("name = 'image-classifier-digits'")
    assert sorted(v.run_id for v in versions) == sorted(r.info.run_id for r in runs.values())
    # evaluated at the same time, the champion is still the better of the two
    best = max(r.data.metrics["test_macro_f1"] for r in runs.values())
    champion = client.get_model_version_by_alias("image-classifier-digits", "champion")
    assert client.get_run(champion.run_id).data.metrics["test_macro_f1"] == best
    assert sorted(r.data.tags["champion.decision"] for r in runs.values()) in (
        ["kept", "promoted"],
        ["promoted", "promoted"],
    )
    shown = _run(["dvc", "exp", "show", "--no-pager", "--md"], root, env)
    assert all(name in shown for name in names)
    # ranked as `make compare` ranks: the two runs, only the param that differs, best first
    compared = (root / "reports/compare.md").read_text()
    assert "2 runs; params shown" in compared
    assert "train.epochs" in compared and "train.batch_size" not in compared
    assert all(name in compared for name in names) and compared in result.stdout
