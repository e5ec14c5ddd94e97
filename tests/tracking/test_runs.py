"""tracking.runs: params as MLflow shows them well, reports logged in their layout."""

from pathlib import Path

from pipeline.tracking import runs


def test_flatten_params_gives_dotted_keys_and_whole_lists():
    flat = runs.flatten_params({"train": {"epochs": 3, "model": {"filters": [1, 2]}}})
    assert flat == {"train.epochs": "3", "train.model.filters": "1, 2"}


def test_list_params_stay_on_one_line():
    assert runs.list_value([]) == "[]"
    assert runs.list_value(["5", "6"]) == "5, 6"
    phases = [{"epochs": 10, "unfreeze": 0}, {"epochs": 5, "unfreeze": 1}]
    assert runs.list_value(phases) == "epochs=10 unfreeze=0; epochs=5 unfreeze=1"


def test_log_folder_keeps_the_layout_and_leaves_out_hidden_files(tmp_path, monkeypatch):
    folder = tmp_path / "reports"
    (folder / "pictures" / "maps").mkdir(parents=True)
    (folder / ".gitignore").write_text("/model\n")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "x.bin").write_bytes(b"x")
    (folder / "metrics.json").write_text("{}")
    (folder / "pictures" / "maps" / "a.png").write_bytes(b"png")
    logged = []
    monkeypatch.setattr(runs.mlflow, "log_artifact", lambda f, p: logged.append((Path(f).name, p)))
    runs.log_folder(folder, "reports/x")
    assert sorted(logged) == [("a.png", "reports/x/pictures/maps"), ("metrics.json", "reports/x")]


def test_a_later_stage_rerun_with_other_params_records_them_without_changing_the_logged_ones(
    tmp_path, monkeypatch
):
    """export.formats changed after a failed export: MLflow refuses to change a logged param,
    so the re-run export stage failed with `Changing param values is not allowed`."""
    import mlflow
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = MlflowClient().create_run(MlflowClient().create_experiment("x")).info.run_id
    first = {"export": {"formats": ["onnx", "tflite_int8"], "batch_size": 64}}
    runs.log_sections(first, ("export",), run_id)
    runs.log_sections({"export": {"formats": ["onnx"], "batch_size": 64}}, ("export",), run_id)
    run = MlflowClient().get_run(run_id)
    assert run.data.params["export.formats"] == "onnx, tflite_int8"  # as first recorded
    assert run.data.tags["now.export.formats"] == "onnx"  # what is in force now
    assert "now.export.batch_size" not in run.data.tags  # unchanged: no tag


def test_a_dataset_inserted_by_another_run_at_the_same_moment_is_linked_on_a_second_try(
    monkeypatch,
):
    """Two pipelines against one server (tests/tracking/test_tracking_server.py) once failed
    on PostgreSQL's unique key: both had checked that the split's dataset was not there."""
    import mlflow
    import pytest

    calls = []

    def log_input(dataset, **kwargs):
        calls.append(dataset)
        if len(calls) == 1:
            raise mlflow.exceptions.MlflowException(
                'duplicate key value violates unique constraint "dataset_pk"'
            )

    monkeypatch.setattr(runs.mlflow, "log_input", log_input)
    runs.log_input_once_raced("split", context="training")
    assert calls == ["split", "split"]
    monkeypatch.setattr(
        runs.mlflow,
        "log_input",
        lambda *a, **k: (_ for _ in ()).throw(mlflow.exceptions.MlflowException("other")),
    )
    with pytest.raises(mlflow.exceptions.MlflowException, match="other"):
        runs.log_input_once_raced("split")  # any other error is not retried
