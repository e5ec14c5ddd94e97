import mlflow
import pytest

from pipeline.tools import compare
from pipeline.tracking import store as store_module


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "compare-test")
    monkeypatch.setattr("pipeline.tracking.store.MLFLOW_ARTIFACTS", tmp_path / "artifacts")
    experiment = store_module.configure()
    for name, epochs, accuracy, loss in [
        ("a", 5, 0.91, 0.30),
        ("b", 9, 0.97, 0.10),
        ("c", 7, 0.95, 0.20),
    ]:
        with mlflow.start_run(experiment_id=experiment, run_name=name):
            mlflow.log_params({"train.epochs": epochs, "base.seed": 42})
            mlflow.log_metrics({"test_accuracy": accuracy, "test_log_loss": loss})
    with mlflow.start_run(experiment_id=experiment, run_name="broken"):
        mlflow.log_params({"train.epochs": 1, "base.seed": 42})
        mlflow.set_tag("note", "failed")
    mlflow.end_run()
    client = mlflow.MlflowClient()
    broken = client.search_runs([experiment], "tags.note = 'failed'")[0]
    client.set_terminated(broken.info.run_id, "FAILED")
    return tmp_path


def test_compare_shows_differing_params_best_first(store, capsys):
    output = store / "compare.md"
    compare.main(["--output", str(output)])
    text = output.read_text()
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert "train.epochs" in header and "base.seed" not in header  # shared params say nothing
    names = [line.split("|")[2].strip() for line in lines[2:]]
    assert names == ["b", "c", "a"]  # best accuracy first; the failed run left out
    assert "0.9700" in text and text in capsys.readouterr().out


def test_compare_sorts_losses_ascending_and_can_show_failed_runs(store):
    output = store / "compare.md"
    compare.main(["--sort", "test_log_loss", "--all", "--output", str(output)])
    rows = [line.split("|")[2].strip() for line in output.read_text().splitlines()[6:]]
    assert rows == ["b", "c", "a", "broken"]  # lowest loss first, the run without it last


def test_compare_names_an_unknown_metric(store):
    with pytest.raises(
        compare.CompareError, match=r"no run has the metric 'test_acuracy'.*test_accuracy"
    ):
        compare.main(["--sort", "test_acuracy", "--output", str(store / "x.md")])
