"""The MLflow run a `dvc repro` leaves: params, metrics, artifacts and the registered pyfunc
model of one run, which the visualize stage also logs to."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.reporting.web_assets import external_loads
from pipeline.tracking import runs

pytestmark = pytest.mark.slow


def test_one_mlflow_run_holds_params_metrics_and_artifacts(project):
    root, env = project
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    run_id = json.loads((root / "models/mlflow_run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    experiment_runs = client.search_runs([run.info.experiment_id])
    assert [r.info.run_id for r in experiment_runs] == [run_id]

    params = yaml.safe_load((root / "params.yaml").read_text())
    batch = str(params["train"]["batch_size"])
    resolved = {  # what the distribution strategy made of the params: one device here
        "train.strategy": "none",
        "train.replicas": "1",
        "train.workers": "1",
        "train.batch_size_global": batch,
        "train.batch_size_per_replica": batch,
        "train.learning_rate_scale": "1.0",
        # base.image_size and base.channels as training resolved them (auto: grey digits)
        "input.image_size": str(params["base"]["image_size"]),
        "input.channels": "1",
        "train.epochs_resolved": str(params["train"]["epochs"]),  # set: as it is
        # auto: early stopping watched from half-way through the cosine schedule
        "train.early_stopping.start_from_epoch_resolved": str(params["train"]["epochs"] // 2),
        # train.transfer.base auto: grey digits train the CNN from scratch
        "train.transfer.base_resolved": "none",
    }
    assert run.data.params == runs.flatten_params(params) | resolved

    history = client.get_metric_history(run_id, "val_loss")
    assert [m.step for m in history] == [1, 2]
    for name in ("loss", "accuracy", "val_accuracy", "learning_rate"):
        assert len(client.get_metric_history(run_id, name)) == 2
    metrics = json.loads((root / "reports/evaluate/metrics.json").read_text())
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["accuracy"])
    assert run.data.metrics["test_macro_f1"] == pytest.approx(metrics["macro_f1"])

    for digit in range(10):  # per-class F1 under stable names, comparable across runs
        assert run.data.metrics[f"test_f1_{digit}"] == pytest.approx(
            metrics["per_class_f1"][str(digit)]
        )
    artifacts = {a.path for a in client.list_artifacts(run_id, "reports/evaluate")}
    assert {
        "reports/evaluate/confusion_matrix_table.json",
        "reports/evaluate/report.html",
        "reports/evaluate/error_gallery.png",
        "reports/evaluate/confusion_matrix.png",
        "reports/evaluate/class_abundance.png",
        "reports/evaluate/predictions.csv",
        "reports/evaluate/metrics.json",
    } <= artifacts
    assert "reports/evaluate/.gitignore" not in artifacts  # DVC's, not a report
    top = {a.path for a in client.list_artifacts(run_id)}  # what the compare view shows
    assert {
        "params.yaml",
        "confusion_matrix.png",
        "confusion_matrix.csv",
        "confusion_matrix.txt",
        "per_class_metrics.csv",
        "history.png",
    } <= top
    champion = client.get_model_version_by_alias("image-classifier-digits", "champion")
    assert champion.run_id == run_id  # the first model of a fresh store
    assert run.data.tags["champion.decision"] == "promoted"
    assert run.data.tags["champion.metric"] == "test_macro_f1"
    assert run.info.run_name.startswith("train 20")  # dated: MLflow's seeded names repeat
    # device policy, code and data versions, registry
    assert {"device", "precision_policy", "jit_compile", "input_cache"} <= run.data.tags.keys()
    assert (
        run.data.tags["git.dirty"] in {"true", "false"} and len(run.data.tags["git.commit"]) == 40
    )
    [dataset] = run.inputs.dataset_inputs
    assert dataset.dataset.name == "split" and dataset.tags[0].value == "training"
    versions = client.search_model_versions("name = 'image-classifier-digits'")
    assert [v.run_id for v in versions] == [run_id]
    for name in ("best_epoch", "epochs_run", "images_per_second_later_epochs", "params_total"):
        assert name in run.data.metrics
    # the model is tied to the data check it passed
    assert run.data.tags["validation.status"] == "passed"
    assert run.data.tags["validation.expectations"] == "24"
    validate_artifacts = {a.path for a in client.list_artifacts(run_id, "reports/validate")}
    assert {
        "reports/validate/validation.json",
        "reports/validate/data_docs",
        "reports/validate/near_duplicates.csv",
    } <= validate_artifacts
    docs = {a.path for a in client.list_artifacts(run_id, "reports/validate/data_docs")}
    assert "reports/validate/data_docs/index.html" in docs

    models = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
    )
    assert [m.name for m in models] == ["model"]
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    info = mlflow.models.get_model_info(f"models:/{models[0].model_id}")
    assert "python_function" in info.flavors
    inputs = {c["name"]: c for c in info.signature.inputs.to_dict()}
    assert inputs["image"] == {"type": "string", "name": "image", "required": False}
    assert inputs["pixels"]["type"] == "array" and not inputs["pixels"]["required"]
    assert [c["name"] for c in info.signature.outputs.to_dict()][:3] == [
        "class",
        "confidence",
        "p_0",
    ]


def test_the_pyfunc_model_predicts_the_test_split_as_evaluate_did(project, monkeypatch):
    """The registered model, given the test images as an HTTP client sends them (base64 file
    bytes), answers exactly what the evaluate stage wrote."""
    import base64

    root, env = project
    run_id = json.loads((root / "models/mlflow_run.json").read_text())["run_id"]
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    expected = pd.read_csv(
        root / "reports/evaluate/predictions.csv", dtype={"predicted_label": str}
    )
    images = [
        base64.b64encode((root / "data/split" / p).read_bytes()).decode("ascii")
        for p in expected["path"]
    ]
    answer = model.predict(pd.DataFrame({"image": images}))
    assert answer["class"].tolist() == expected["predicted_label"].tolist()
    probabilities = [c for c in expected.columns if c.startswith("p_")]
    assert list(answer.columns) == ["class", "confidence", *probabilities]
    written = pd.read_csv(root / "reports/evaluate/predictions.csv", dtype=str)
    # as evaluate wrote them, to the sixth decimal give or take its last digit: one batch of
    # every image here, batches of evaluate.batch_size there, so oneDNN may sum in another order
    for column in ["confidence", *probabilities]:
        gap = np.abs(answer[column].to_numpy() - written[column].astype(float).to_numpy())
        assert gap.max() <= 1.5e-6, (column, gap.max())
    # the predict CLI and transfer learning take the same URI
    from pipeline.tracking.registry import load_classifier

    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    classifier = load_classifier(f"runs:/{run_id}/model")
    assert classifier.classes == [str(d) for d in range(10)] and classifier.image_size == 16
    with pytest.raises(mlflow.exceptions.MlflowException, match="row 0: not an image"):
        model.predict(pd.DataFrame({"image": [base64.b64encode(b"plain text").decode()]}))


def test_visualize_checks_the_trained_model_and_logs_to_its_run(project):
    root, env = project
    metrics = json.loads((root / "reports/visualize/metrics.json").read_text())
    assert metrics["classes_shown"] == 10 and metrics["classes_without_test_image"] == []
    assert 0 <= metrics["forward_max_abs_difference"] <= 1e-4
    check = pd.read_csv(root / "reports/visualize/forward_check.csv")
    assert check["within_tolerance"].all()
    assert list(check["layer"][:2]) == ["rescale", "random_translation"]
    # SHRUNK: 4 then 8 filters of 3x3 'same' on 16x16x1 images (the grey digits stay grey),
    # batch-normalised (no bias), global average pooling, dense 16 and 10 outputs
    sharing = pd.read_csv(root / "reports/visualize/weight_sharing.csv").set_index("layer")
    assert sharing.loc["block1_conv1", "cnn"] == 3 * 3 * 1 * 4
    assert sharing.loc["block1_conv1", "fully_connected"] == 16 * 16 * 4 * (16 * 16 * 1)
    page = (root / "reports/visualize/report.html").read_text()
    assert external_loads(page) == [] and page.count("data:image/png;base64,") == 4 + 10

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    run_id = json.loads((root / "models/mlflow_run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"  # visualize added to it without re-opening it
    assert (run.data.tags["evaluate.status"], run.data.tags["visualize.status"]) == (
        "finished",
        "finished",
    )
    assert run.data.metrics["weight_sharing_cnn_params"] == metrics["weight_sharing"]["cnn_params"]
    assert run.data.metrics["weight_sharing_fully_connected_ratio"] > 100
    assert run.data.metrics["visualize_forward_max_abs_difference"] <= 1e-4
    assert run.data.params["visualize.tolerance"] == "0.0001"
    pictures = {a.path for a in client.list_artifacts(run_id, "reports/visualize/pictures")}
    assert "reports/visualize/pictures/grad_cam.png" in pictures
    assert len(client.list_artifacts(run_id, "reports/visualize/pictures/feature_maps")) == 10
