"""The whole pipeline through the real `dvc repro`, in a throw-away copy of the project."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline import tracking
from pipeline.paths import DVC_PLOTS_TEMPLATE, WEB_ASSETS_DIR
from pipeline.web_assets import VEGA, external_loads
from tests.projects import free_port, kill_when_trained, make_project, run

pytestmark = pytest.mark.slow

EXPECTED_OUTPUTS = (
    "data/raw/0/0000.png",
    "data/split/manifest.csv",
    "data/split/labels.json",
    "data/split/train/0",
    "data/split/validation/9",
    "data/split/test/5",
    "reports/validate/validation.json",
    "reports/validate/near_duplicates.csv",
    "reports/validate/data_docs/index.html",
    "data/split/summary.csv",
    "data/split/rejected.csv",
    "models/model.keras",
    "models/mlflow_run.json",
    "reports/train/history.csv",
    "reports/train/phases.csv",
    "reports/evaluate/metrics.json",
    "reports/evaluate/predictions.csv",
    "reports/evaluate/confusion_matrix.csv",
    "reports/evaluate/confusion_matrix.png",
    "reports/evaluate/class_abundance.csv",
    "reports/evaluate/class_abundance.png",
    "reports/evaluate/per_class_metrics.csv",
    "models/labels.json",
    "reports/evaluate/report.html",
    "reports/evaluate/confusion_matrix_normalized.csv",
    "reports/evaluate/confusion_matrix.json",
    "reports/evaluate/calibration.csv",
    "reports/evaluate/reliability_diagram.png",
    "reports/evaluate/errors.csv",
    "reports/evaluate/error_gallery.png",
    "reports/visualize/report.html",
    "reports/visualize/metrics.json",
    "reports/visualize/forward_check.csv",
    "reports/visualize/weight_sharing.csv",
    "reports/visualize/pictures/filters.png",
    "reports/visualize/pictures/filter_responses.png",
    "reports/visualize/pictures/grad_cam.png",
    "reports/visualize/pictures/weight_sharing.png",
    "reports/visualize/pictures/feature_maps/class_000_0.png",
    "reports/visualize/pictures/feature_maps/class_009_9.png",
)


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    return run(args, cwd, env)


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, prepared: Path
) -> tuple[Path, dict[str, str]]:
    """The project with shrunk params, after a full `dvc repro` (the data stages skipped:
    `prepared` ran them with the same params)."""
    from tests.conftest import SHRUNK

    root = tmp_path_factory.mktemp("project")
    env = make_project(root, SHRUNK, prepared)
    output = _run(["dvc", "repro"], root, env)
    assert "Stage 'validate' didn't change, skipping" in output
    return root, env


def test_repro_writes_every_declared_output(project):
    root, _ = project
    missing = [path for path in EXPECTED_OUTPUTS if not (root / path).exists()]
    assert missing == []
    manifest = (root / "data/split/manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 1797


def test_data_docs_load_nothing_from_the_network(project):
    if not (WEB_ASSETS_DIR / VEGA.folder / ".complete").exists():
        pytest.skip("front-end packages not fetched: `make setup` needs npm")
    root, _ = project
    pages = list((root / "reports/validate/data_docs").rglob("*.html"))
    assert len(pages) >= 20  # the index, ten suites, ten validation results
    assert {
        page.name: external_loads(page.read_text())
        for page in pages
        if external_loads(page.read_text())
    } == {}


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
    batch = str(params["train"]["batch_size"])
    resolved = {  # what the distribution strategy made of the params: one device here
        "train.strategy": "none", "train.replicas": "1", "train.workers": "1",
        "train.batch_size_global": batch, "train.batch_size_per_replica": batch,
        "train.learning_rate_scale": "1.0",
    }  # fmt: skip
    assert run.data.params == tracking.flatten_params(params) | resolved

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
    assert {"params.yaml", "confusion_matrix.png", "confusion_matrix.csv", "confusion_matrix.txt",
            "per_class_metrics.csv", "history.png"} <= top  # fmt: skip
    champion = client.get_model_version_by_alias("image-classifier", "champion")
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
    versions = client.search_model_versions("name = 'image-classifier'")
    assert [v.run_id for v in versions] == [run_id]
    for name in ("best_epoch", "epochs_run", "images_per_second_later_epochs", "params_total"):
        assert name in run.data.metrics
    # the model is tied to the data check it passed
    assert run.data.tags["validation.status"] == "passed"
    assert run.data.tags["validation.expectations"] == "23"
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
    images = [base64.b64encode((root / "data/split" / p).read_bytes()).decode("ascii")
              for p in expected["path"]]  # fmt: skip
    answer = model.predict(pd.DataFrame({"image": images}))
    assert answer["class"].tolist() == expected["predicted_label"].tolist()
    probabilities = [c for c in expected.columns if c.startswith("p_")]
    assert list(answer.columns) == ["class", "confidence", *probabilities]
    written = pd.read_csv(root / "reports/evaluate/predictions.csv", dtype=str)
    for column in ["confidence", *probabilities]:  # as evaluate wrote them, digit for digit
        assert [f"{v:.6f}" for v in answer[column]] == written[column].tolist(), column
    # the predict CLI and transfer learning take the same URI
    from pipeline.predict import load_classifier

    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    classifier = load_classifier(f"runs:/{run_id}/model")
    assert classifier.classes == [str(d) for d in range(10)] and classifier.image_size == 16
    with pytest.raises(mlflow.exceptions.MlflowException, match="row 0: not an image"):
        model.predict(pd.DataFrame({"image": [base64.b64encode(b"plain text").decode()]}))


def test_evaluation_report_is_self_contained(project):
    root, _ = project
    page = (root / "reports/evaluate/report.html").read_text()
    assert external_loads(page) == []
    assert page.count("data:image/png;base64,") == 5  # history, confusion, abundance, ...
    table = json.loads((root / "reports/evaluate/confusion_matrix.json").read_text())
    assert table["classes"] == [str(d) for d in range(10)]
    assert (
        sum(map(sum, table["counts"]))
        == json.loads((root / "reports/evaluate/metrics.json").read_text())["n_images"]
    )


def test_visualize_checks_the_trained_model_and_logs_to_its_run(project):
    root, env = project
    metrics = json.loads((root / "reports/visualize/metrics.json").read_text())
    assert metrics["classes_shown"] == 10 and metrics["classes_without_test_image"] == []
    assert 0 <= metrics["forward_max_abs_difference"] <= 1e-4
    check = pd.read_csv(root / "reports/visualize/forward_check.csv")
    assert check["within_tolerance"].all()
    assert list(check["layer"][:2]) == ["rescale", "random_rotation"]
    # SHRUNK: 4 then 8 filters of 3x3 on 16x16x3 images, then dense 16 and 10 outputs
    sharing = pd.read_csv(root / "reports/visualize/weight_sharing.csv").set_index("layer")
    assert sharing.loc["block1_conv1", "cnn"] == 3 * 3 * 3 * 4 + 4
    assert sharing.loc["block1_conv1", "fully_connected"] == 14 * 14 * 4 * (16 * 16 * 3 + 1)
    page = (root / "reports/visualize/report.html").read_text()
    assert external_loads(page) == [] and page.count("data:image/png;base64,") == 4 + 10

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    run_id = json.loads((root / "models/mlflow_run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["weight_sharing_cnn_params"] == metrics["weight_sharing"]["cnn_params"]
    assert run.data.metrics["weight_sharing_fully_connected_ratio"] > 100
    assert run.data.metrics["visualize_forward_max_abs_difference"] <= 1e-4
    assert run.data.params["visualize.tolerance"] == "0.0001"
    pictures = {a.path for a in client.list_artifacts(run_id, "reports/visualize/pictures")}
    assert "reports/visualize/pictures/grad_cam.png" in pictures
    assert len(client.list_artifacts(run_id, "reports/visualize/pictures/feature_maps")) == 10


def leaky_folder(root: Path) -> Path:
    """Three classes of real digit scans, each saved twice: as PNG and as JPEG. The two copies
    differ in bytes (so the split cannot see they are the same) but not to the eye."""
    from PIL import Image

    from pipeline.ingest import digits_images

    pixels, labels = digits_images()
    for digit in (0, 1, 2):
        for index in [i for i, label in enumerate(labels) if label == digit][:20]:
            image = Image.fromarray(pixels[index]).resize((32, 32)).convert("RGB")
            folder = root / f"digit {digit}"
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"{index}.png")
            image.save(folder / f"{index}.jpg", quality=95)
    return root


def test_a_run_carries_its_lineage_and_make_reproduce_matches_it_exactly(project):
    root, env = project
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    [experiment] = [e for e in client.search_experiments() if e.name != "Default"]
    [original] = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if r.info.run_name.startswith("train ")
    ]
    tags = original.data.tags
    commit = _run(["git", "rev-parse", "HEAD"], root, env).strip()
    assert tags["git.commit"] == commit
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    [raw] = [o for o in lock["ingest"]["outs"] if o["path"] == "data/raw"]
    assert tags["data.raw_dvc_md5"] == raw["md5"] and raw["md5"].endswith(".dir")
    assert tags["dvc.stage.split"].startswith("data/split=")
    assert {"env.tensorflow", "env.keras", "env.dvc", "env.mlflow", "env.python"} <= tags.keys()
    [dataset] = original.inputs.dataset_inputs
    assert {t.key: t.value for t in dataset.tags}["raw_dvc_md5"] == raw["md5"]
    lineage = {a.path for a in client.list_artifacts(original.info.run_id, "lineage")}
    assert "lineage/dvc.lock" in lineage

    assert "dvc.stage.train" not in tags  # the lock's train entry is the previous run's
    # a changed workspace does not matter: the run's own params are restored
    committed = (root / "params.yaml").read_text()
    params = yaml.safe_load(committed)
    params["train"]["epochs"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        output = _run([sys.executable, "-m", "pipeline.reproduce", original.info.run_id], root, env)
    finally:  # the module's later tests use the project as its run left it
        (root / "params.yaml").write_text(committed)
    assert "all " in output and "metrics match the original run exactly" in output
    [again] = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if r.data.tags.get("reproduces") == original.info.run_id
    ]
    timings = ("training_seconds", "images_per_second_first_epoch",
               "images_per_second_later_epochs")  # fmt: skip
    for name, value in original.data.metrics.items():
        if name not in timings and not name.startswith("champion_"):  # registry state
            assert again.data.metrics[name] == value, name
    assert again.data.params == original.data.params
    assert again.data.tags["data.raw_dvc_md5"] == raw["md5"]


def test_a_second_clone_pulls_data_and_run_cache_and_recomputes_nothing(project, tmp_path):
    """`make push` to a local-directory remote; a fresh clone `make pull`s. With the committed
    dvc.lock every stage is up to date; without it (the lock of a run never committed) DVC's
    run-cache restores every computed stage instead of running it."""
    root, env = project
    first = tmp_path / "first"
    shutil.copytree(root, first, symlinks=True)
    _run(["git", "add", "-A"], first, env)
    _run(["git", "commit", "-qm", "a run"], first, env)
    remote_env = {**env, "DVC_REMOTE": str(tmp_path / "remote")}
    pushed = _run([sys.executable, "-m", "pipeline.remote", "push"], first, remote_env)
    assert "DVC remote 'shared' ->" in pushed
    assert "shared" not in (first / ".dvc/config").read_text()  # per machine, not committed

    second = tmp_path / "second"
    _run(["git", "clone", "-q", str(first), str(second)], tmp_path, env)
    _run([sys.executable, "-m", "pipeline.remote", "pull"], second, remote_env)
    assert (second / "models/model.keras").read_bytes() == (
        root / "models/model.keras"
    ).read_bytes()
    output = _run(["dvc", "repro"], second, env)
    for stage in ("ingest", "split", "validate", "train", "evaluate", "visualize"):
        assert f"Stage '{stage}' didn't change, skipping" in output

    lock = yaml.safe_load((second / "dvc.lock").read_text())
    for stage in ("train", "evaluate", "visualize"):
        del lock["stages"][stage]
    (second / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    shutil.rmtree(second / "models")
    shutil.rmtree(second / "reports")
    output = _run(["dvc", "repro"], second, env)
    for stage in ("train", "evaluate", "visualize"):
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in output
    assert "Running stage" not in output
    restored = json.loads((second / "reports/evaluate/metrics.json").read_text())
    assert restored == json.loads((root / "reports/evaluate/metrics.json").read_text())


def test_make_report_shows_a_change_against_main(project, tmp_path):
    """`make report`, the pull-request workflow's step, in a repository whose main branch
    holds a committed run and whose workspace changes a param: the params diff shows it, every
    model metric equals main's, and the real pictures lie beside the report."""
    from pipeline.paths import ROOT

    root, env = project
    work = tmp_path / "work"
    shutil.copytree(root, work, symlinks=True)
    _run(["git", "add", "-A"], work, env)
    _run(["git", "commit", "-qm", "a run"], work, env)
    _run(["git", "branch", "-M", "main"], work, env)
    _run(["git", "checkout", "-qb", "change"], work, env)
    params = yaml.safe_load((work / "params.yaml").read_text())
    epochs = params["train"]["epochs"]
    params["train"]["epochs"] = epochs + 1
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for name in ("Makefile", "pyproject.toml", "uv.lock", ".venv", ".tools"):
        (work / name).symlink_to(ROOT / name)  # the project's installed environment
    ci = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "o/r",
          "GITHUB_RUN_ID": "7"}  # fmt: skip
    output = _run(["make", "report", "BASE=main"], work, {**env, **ci})

    text = (work / "reports/ci/report.md").read_text()
    assert text in output
    commit = _run(["git", "rev-parse", "main"], work, env).strip()
    assert text.startswith(
        f"# Pipeline report: the workspace at `{commit[:8]}` against `main` (`{commit[:8]}`)"
    )
    assert f"| `params.yaml` | `train.epochs` | {epochs} | {epochs + 1} |" in text
    assert "1 param and 0 model metrics differ" in text
    assert "Every model metric equals `main`'s." in text
    accuracy = json.loads((root / "reports/evaluate/metrics.json").read_text())["accuracy"]
    assert f"| test accuracy | {accuracy:.4f} | {accuracy:.4f} | +0.0000 |" in text
    confusion = text.split("## Confusion matrix (test)")[1].split("##")[0]
    assert [line.split("|")[1].strip() for line in confusion.splitlines()[6:16]] == [
        f"**{digit}**" for digit in range(10)
    ]
    for picture in ("evaluate/confusion_matrix.png", "train/history.png"):
        copied = work / "reports/ci" / Path(picture).name
        assert copied.read_bytes() == (root / "reports" / picture).read_bytes()
    assert "[this run](https://github.com/o/r/actions/runs/7)" in text


def test_push_without_a_remote_says_how_to_name_one(project, tmp_path):
    root, env = project
    env = {k: v for k, v in env.items() if k != "DVC_REMOTE"}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.remote", "push"], cwd=root, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0
    assert "push: no DVC remote to push: set DVC_REMOTE to a URL or path" in result.stderr
    named = {**env, "DVC_REMOTE": "nosuchremote"}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.remote", "pull"], cwd=root, env=named,
        capture_output=True, text=True,
    )  # fmt: skip
    assert "DVC_REMOTE=nosuchremote is neither a URL nor a remote of this project" in result.stderr


def test_a_two_point_sweep_runs_at_once_into_the_project_store(tmp_path, prepared):
    """`make sweep`: a grid of two `train.epochs` values queued as DVC experiments and run by
    `dvc queue start -j 2` in temporary copies at the same time; with no MLFLOW_TRACKING_URI
    set, both record into the project's own SQLite store, in full, each MLflow run named after
    its DVC experiment; the sweep ends by ranking them as `make compare` does."""
    from tests.conftest import SHRUNK

    root = tmp_path / "queued"
    root.mkdir()
    env = make_project(root, SHRUNK, prepared)
    del env["MLFLOW_TRACKING_URI"]
    (root / "grid.yaml").write_text("train.epochs: [1, 2]\n")
    sweep = [sys.executable, "-m", "pipeline.sweep", "grid.yaml", "--jobs", "2", "--poll", "2"]
    result = subprocess.run(sweep, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    logs = "".join(p.read_text() for p in (root / ".dvc/tmp/exps/celery").glob("*.out"))
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{logs[-5000:]}"
    [prefix] = {line.split()[2].rsplit("-", 1)[0] for line in result.stdout.splitlines()
                if line.startswith("sweep: queued ")}  # fmt: skip
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
    versions = client.search_model_versions("name = 'image-classifier'")
    assert sorted(v.run_id for v in versions) == sorted(r.info.run_id for r in runs.values())
    # evaluated at the same time, the champion is still the better of the two
    best = max(r.data.metrics["test_macro_f1"] for r in runs.values())
    champion = client.get_model_version_by_alias("image-classifier", "champion")
    assert client.get_run(champion.run_id).data.metrics["test_macro_f1"] == best
    assert sorted(r.data.tags["champion.decision"] for r in runs.values()) in (
        ["kept", "promoted"], ["promoted", "promoted"]
    )  # fmt: skip
    shown = _run(["dvc", "exp", "show", "--no-pager", "--md"], root, env)
    assert all(name in shown for name in names)
    # ranked as `make compare` ranks: the two runs, only the param that differs, best first
    compared = (root / "reports/compare.md").read_text()
    assert "2 runs; params shown" in compared
    assert "train.epochs" in compared and "train.batch_size" not in compared
    assert all(name in compared for name in names) and compared in result.stdout


def test_repro_stops_at_validate_on_leaked_near_duplicates(tmp_path):
    from tests.conftest import SHRUNK

    source = leaky_folder(tmp_path / "leaky")
    root = tmp_path / "project"
    root.mkdir()
    env = make_project(root, {**SHRUNK, "ingest": {"source": str(source)}})
    result = subprocess.run(
        ["dvc", "repro"], cwd=root, env=env, capture_output=True, text=True, timeout=900
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "failed to reproduce 'validate'" in output
    assert "near_duplicates.distance: expect_column_values_to_be_between" in output
    assert "nearest_train_path=train/digit " in output
    assert "Running stage 'train'" not in output
    assert not (root / "models" / "model.keras").exists()
    report = json.loads((root / "reports/validate/validation.json").read_text())
    assert report["success"] is False
    assert report["near_duplicates"] > 0
    assert (root / "reports/validate/data_docs/index.html").exists()


@pytest.fixture(scope="module")
def validated(
    tmp_path_factory: pytest.TempPathFactory, prepared: Path
) -> tuple[Path, dict[str, str]]:
    """A project with shrunk params (six epochs, no early stop), run up to `validate`."""
    from tests.conftest import SHRUNK, _merge

    root = tmp_path_factory.mktemp("trainable")
    overrides = _merge(SHRUNK, {"train": {"epochs": 6, "early_stopping": {"patience": 10}}})
    env = make_project(root, overrides, prepared)
    _run(["dvc", "repro", "validate"], root, env)
    return root, env


@pytest.fixture(scope="module")
def trained(validated: tuple[Path, dict[str, str]], tmp_path_factory) -> tuple[Path, dict]:
    """`validated` trained once, uninterrupted: a copy of its model and its metrics."""
    root, env = validated
    _run([sys.executable, "-m", "pipeline.train"], root, env)
    keep = tmp_path_factory.mktemp("trained") / "model.keras"
    shutil.copy(root / "models/model.keras", keep)
    return keep, json.loads((root / "reports/train/metrics.json").read_text())


def _weights(path: Path) -> list:
    import keras

    return keras.saving.load_model(path, safe_mode=True).get_weights()


def test_two_cpu_runs_with_the_same_params_give_identical_weights(validated, trained):
    root, env = validated
    first = _weights(trained[0])
    _run([sys.executable, "-m", "pipeline.train"], root, env)
    second = _weights(root / "models/model.keras")
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert (a == b).all()


def _kill_training_after(root: Path, env: dict[str, str], epochs: int) -> int:
    """Start `pipeline.train` and SIGKILL it once `epochs` epochs are done; return how many
    it had finished."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.train"], cwd=root, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return kill_when_trained([process], root / ".resume/train/history.csv", epochs)


def test_killed_training_resumes_in_the_same_run(validated, trained):
    root, env = validated
    uninterrupted = trained[1]

    done_before = _kill_training_after(root, env, epochs=2)
    killed_run = json.loads((root / ".resume/train/run.json").read_text())["run_id"]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    name = client.get_run(killed_run).info.run_name
    assert 2 <= done_before < 6

    output = _run([sys.executable, "-m", "pipeline.train"], root, env)
    assert f"resuming MLflow run {killed_run}" in output
    assert json.loads((root / "models/mlflow_run.json").read_text())["run_id"] == killed_run
    table = pd.read_csv(root / "reports/train/history.csv")
    assert table["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    resumed = json.loads((root / "reports/train/metrics.json").read_text())
    assert resumed["epochs_run"] == 6
    assert abs(resumed["best_val_accuracy"] - uninterrupted["best_val_accuracy"]) <= 0.05
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
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["transfer"].update(
        base="pipeline",
        weights="earlier.keras",
        dense_units=[16],
        schedule="manual",
        phases=[
            {"epochs": 2, "unfreeze": 0, "learning_rate": 0.01},
            {"epochs": 3, "unfreeze": 2, "learning_rate": 0.001},
        ],
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    assert 3 <= _kill_training_after(root, env, epochs=3) < 5  # killed inside phase 2
    killed_run = json.loads((root / ".resume/train/run.json").read_text())["run_id"]

    output = _run([sys.executable, "-m", "pipeline.train"], root, env)
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
    # each phase starts at its rate; the seed's inverse-time decay lowers it a little per step
    assert by_step("learning_rate") == pytest.approx([0.01, 0.01, 0.001, 0.001, 0.001], rel=0.15)
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


def test_the_champion_is_served_over_http_and_bad_requests_get_a_readable_4xx(project, tmp_path):
    """`make serve`'s command: the real scoring server, real images, answers equal to the
    predictions file; requests it cannot answer get 400 with the reason, and it keeps serving."""
    import base64
    import os
    import signal
    import time
    import urllib.error
    import urllib.request

    import numpy as np

    from pipeline.dataset import decode_image

    root, env = project
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        ["mlflow", "models", "serve", "--env-manager", "local", "--host", "127.0.0.1",
         "--port", str(port), "--model-uri", "models:/image-classifier@champion"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def post(body: bytes) -> tuple[int, str]:
        request = urllib.request.Request(
            f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def pixels(*arrays) -> bytes:
        data = [[np.asarray(a).tolist()] for a in arrays]
        return json.dumps({"dataframe_split": {"columns": ["pixels"], "data": data}}).encode()

    def images(*payloads: bytes, column: str = "image") -> bytes:
        data = [[base64.b64encode(p).decode("ascii")] for p in payloads]
        return json.dumps({"dataframe_split": {"columns": [column], "data": data}}).encode()

    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(1)
        expected = pd.read_csv(root / "reports/evaluate/predictions.csv", dtype=str).head(40)
        files = [(root / "data/split" / p).read_bytes() for p in expected["path"]]
        status, body = post(images(*files))
        assert status == 200, body
        answers = json.loads(body)["predictions"]
        assert [a["class"] for a in answers] == expected["predicted_label"].tolist()
        assert [f"{a['confidence']:.6f}" for a in answers] == expected["confidence"].tolist()

        # uint8 arrays at the model's size, as nested lists: the same answers
        decoded = [
            decode_image(str(root / "data/split" / p), 16, 3).numpy() for p in expected["path"][:8]
        ]
        status, body = post(pixels(*decoded))
        assert status == 200, body
        assert [a["class"] for a in json.loads(body)["predictions"]] == (
            expected["predicted_label"].tolist()[:8]
        )

        for request, message in (
            (images(b"just some text"), "row 0: not an image (no known image format)"),
            (images(files[0], b"\x89PNG\r\n\x1a\n" + b"\0" * 40), "row 1: not an image"),
            (images(os.urandom(21 * 1024 * 1024)), "row 0: the image has 22,020,096 bytes"),
            (images(files[0], column="img"), "expected one column: 'image'"),
            (pixels(np.zeros((8, 8, 3), np.uint8)), "row 0: an array of shape (8, 8, 3)"),
            (pixels(np.full((16, 16, 3), 300)), "row 0: values outside 0-255"),
            (b"", ""),
            (b"{not json", ""),
        ):
            status, body = post(request)
            assert 400 <= status < 500, (status, body[:300])
            assert message in body, body[:500]
        status, body = post(images(files[1]))  # still serving
        assert (
            status == 200
            and json.loads(body)["predictions"][0]["class"] == (expected["predicted_label"].iloc[1])
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
