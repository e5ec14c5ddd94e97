"""The whole pipeline through the real `dvc repro`, in a throw-away copy of the project."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline import tracking
from pipeline.paths import DVC_PLOTS_TEMPLATE, ROOT

pytestmark = pytest.mark.slow

PROJECT_FILES = ("pipeline", "dvc.yaml", ".dvcignore")
EXPECTED_OUTPUTS = (
    "data/raw/0/0000.png",
    "data/split/manifest.csv",
    "data/split/labels.json",
    "data/split/train/0",
    "data/split/validation/9",
    "data/split/test/5",
    "reports/validate/validation.json",
    "models/model.keras",
    "models/mlflow_run.json",
    "reports/train/history.csv",
    "reports/evaluate/metrics.json",
    "reports/evaluate/predictions.csv",
    "reports/evaluate/confusion_matrix.csv",
    "reports/evaluate/confusion_matrix.png",
    "reports/evaluate/class_abundance.csv",
    "reports/evaluate/class_abundance.png",
    "reports/evaluate/per_class_metrics.csv",
)


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A git + DVC copy of the project with shrunk params, and the environment to run it in."""
    from tests.conftest import SHRUNK, _merge

    root = tmp_path_factory.mktemp("project")
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / name)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(_merge(params, SHRUNK), sort_keys=False))

    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    (root / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n__pycache__/\n")
    _run(["git", "init", "-q"], root, env)
    _run(["dvc", "init", "-q"], root, env)
    _run(["dvc", "config", "core.analytics", "false"], root, env)
    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-qm", "project"], root, env)
    _run(["dvc", "repro"], root, env)
    return root, env


def test_repro_writes_every_declared_output(project):
    root, _ = project
    missing = [path for path in EXPECTED_OUTPUTS if not (root / path).exists()]
    assert missing == []
    manifest = (root / "data/split/manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 1797


def test_dvc_metrics_show_prints_test_accuracy(project):
    root, env = project
    shown = json.loads(_run(["dvc", "metrics", "show", "--json"], root, env))
    metrics = shown[""]["data"]["reports/evaluate/metrics.json"]["data"]
    assert 0 <= metrics["accuracy"] <= 1
    assert metrics == json.loads((root / "reports/evaluate/metrics.json").read_text())


def test_dvc_plots_render(project):
    root, env = project
    _run(["dvc", "plots", "show", "-o", "plots"], root, env)
    page = (root / "plots/index.html").read_text()
    for title in ("Loss per epoch", "Accuracy per epoch", "Confusion matrix (test)"):
        assert title in page


def test_dvc_plots_render_offline_with_the_setup_template(project):
    if not DVC_PLOTS_TEMPLATE.exists():
        pytest.skip("no offline template: `make setup` needs npm to build it")
    root, env = project
    template = str(DVC_PLOTS_TEMPLATE)
    _run(["dvc", "plots", "show", "-o", "offline", "--html-template", template], root, env)
    page = (root / "offline/index.html").read_text()
    assert "vegaEmbed('#Loss_per_epoch'" in page
    assert "https://cdn" not in page


def test_one_mlflow_run_holds_params_metrics_and_artifacts(project):
    root, env = project
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    run_id = json.loads((root / "models/mlflow_run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    experiment_runs = client.search_runs([run.info.experiment_id])
    assert [r.info.run_id for r in experiment_runs] == [run_id]

    params = yaml.safe_load((root / "params.yaml").read_text())
    assert run.data.params == tracking.flatten_params(params)

    history = client.get_metric_history(run_id, "val_loss")
    assert [m.step for m in history] == [1, 2]
    for name in ("loss", "accuracy", "val_accuracy", "learning_rate"):
        assert len(client.get_metric_history(run_id, name)) == 2
    metrics = json.loads((root / "reports/evaluate/metrics.json").read_text())
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["accuracy"])
    assert run.data.metrics["test_macro_f1"] == pytest.approx(metrics["macro_f1"])

    artifacts = {a.path for a in client.list_artifacts(run_id, "reports/evaluate")}
    assert {
        "reports/evaluate/confusion_matrix.png",
        "reports/evaluate/class_abundance.png",
        "reports/evaluate/predictions.csv",
        "reports/evaluate/metrics.json",
    } <= artifacts
    assert "params.yaml" in {a.path for a in client.list_artifacts(run_id)}

    models = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
    )
    assert [m.name for m in models] == ["model"]
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    info = mlflow.models.get_model_info(f"models:/{models[0].model_id}")
    assert "keras" in info.flavors
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 16, 16, 3)


def test_exp_run_with_a_changed_param_is_recorded(project):
    root, env = project
    _run(["dvc", "exp", "run", "-S", "train.epochs=1", "-n", "one-epoch"], root, env)
    shown = _run(["dvc", "exp", "show", "--no-pager", "--md"], root, env)
    assert "one-epoch" in shown
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs(
        [client.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT).experiment_id],
        filter_string="params.`train.epochs` = '1'",
    )
    assert len(runs) == 1
    assert len(client.get_metric_history(runs[0].info.run_id, "val_loss")) == 1
    assert "test_accuracy" in runs[0].data.metrics
    # the MLflow run is named after the DVC experiment, so both UIs tell the same story
    assert runs[0].info.run_name == "one-epoch"
    assert runs[0].data.tags["dvc_experiment"] == "one-epoch"
