"""`make report`: metrics and params of the workspace against a base branch, in a real git +
DVC repository whose results the test writes (the end-to-end test runs it on a real run)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from pipeline.paths import AUDIT_METRICS, EXPORT_METRICS, ROOT, VISUALIZE_METRICS
from pipeline.tools import report
from tests.projects import GIT_IDENTITY, run

EVALUATE = {
    "accuracy": 0.90,
    "macro_f1": 0.89,
    "log_loss": 0.31,
    "n_images": 30,
    "per_class_f1": {"cat": 0.9, "dog": 0.8, "owl": 0.97},
}
VISUALIZE = {"forward_max_abs_difference": 2e-06, "weight_sharing": {"cnn_params": 5000}}
AUDIT = {"suspects": 3, "images": 50, "cross_fit_accuracy": 0.9}
EXPORT = {"onnx_agreement": 1.0, "tflite_int8_accuracy": 0.9}
TRAIN = {
    "best_val_loss": 0.25,
    "epochs_run": 12,
    "training_seconds": 40.0,
    "images_per_second_later_epochs": 800.0,
}


def git(root: Path, *args: str) -> str:
    return run(["git", *args], root, {**os.environ, **GIT_IDENTITY}).strip()


def write_results(root: Path, evaluate: dict, train: dict) -> None:
    """What `make run` leaves that the report reads: metrics, confusion matrix, history and
    the two pictures."""
    written = (
        (report.METRICS_FILE, evaluate),
        (report.TRAIN_METRICS_FILE, train),
        (VISUALIZE_METRICS, VISUALIZE),
        (AUDIT_METRICS, AUDIT),
        (EXPORT_METRICS, EXPORT),
    )
    for path, data in written:
        target = root / report.relative(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data))
    pd.DataFrame(
        [[9, 1, 0], [0, 8, 2], [0, 0, 10]],
        index=pd.Index(["cat", "dog", "owl"], name="true"),
        columns=["cat", "dog", "owl"],
    ).to_csv(root / report.relative(report.CONFUSION_CSV))
    pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "loss": [1.0, 0.5, 0.4],
            "val_loss": [0.9, 0.25, 0.3],
            "accuracy": [0.5, 0.8, 0.9],
            "val_accuracy": [0.6, 0.85, 0.84],
        }
    ).to_csv(root / report.relative(report.HISTORY_FILE), index=False)
    for picture, _ in report.PICTURES:
        Image.new("RGB", (4, 4), "white").save(root / report.relative(picture))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git + DVC repository with the project's dvc.yaml and params.yaml whose `main`
    branch holds committed results; the workspace is a branch off it."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(ROOT / name, root / name)
    write_results(root, EVALUATE, TRAIN)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "main")
    git(root, "checkout", "-qb", "change")
    return root


def change_params(root: Path, epochs: int) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["epochs"] = epochs
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_a_change_shows_its_params_and_metrics_against_the_base(repo):
    change_params(repo, 5)
    better = {
        **EVALUATE,
        "accuracy": 0.95,
        "log_loss": 0.40,
        "per_class_f1": {**EVALUATE["per_class_f1"], "dog": 0.9},
    }
    write_results(repo, better, {**TRAIN, "training_seconds": 35.5})
    comparison = report.compare(repo, "main")

    assert comparison.base_commit == git(repo, "rev-parse", "main")
    assert comparison.params.to_dict("records") == [
        {"file": "params.yaml", "param": "train.epochs", "base": "auto", "workspace": 5}
    ]
    metrics = comparison.metrics.set_index("metric")
    assert metrics.loc["accuracy", "base"] == 0.90
    assert metrics.loc["accuracy", "workspace"] == 0.95
    assert metrics.loc["accuracy", "change"] == pytest.approx(0.05)
    assert metrics.loc["per_class_f1.dog", "change"] == pytest.approx(0.1)

    text = report.render(comparison, repo, link="https://ci.example/runs/7")
    assert "| test accuracy | 0.9000 | 0.9500 | +0.0500 better |" in text
    assert "| test log loss | 0.3100 | 0.4000 | +0.0900 **worse** |" in text
    assert "| epochs run | 12 | 12 | +0 |" in text
    assert "| `params.yaml` | `train.epochs` | `auto` | 5 |" in text
    changed = text.split("## Model metrics that differ")[1].split("## Timings")[0]
    assert "`accuracy`" in changed and "`per_class_f1.dog`" in changed
    assert "`per_class_f1.cat`" not in changed and "training_seconds" not in changed
    timings = text.split("## Timings (vary with the machine)")[1].split("##")[0]
    assert "| `training_seconds` | 40.0000 | 35.5000 | -4.5000 |" in timings
    assert "1 param and 3 model metrics differ" in text
    assert "| true \\ predicted | cat | dog | owl |" in text  # the confusion matrix
    assert "| **dog** | 0 | 8 | 2 |" in text
    assert "lowest validation loss 0.2500 at epoch 2" in text
    assert "[this run](https://ci.example/runs/7)" in text


def test_no_change_says_so(repo):
    text = report.render(report.compare(repo, "main"), repo)
    assert "No param differs from `main`." in text
    assert "Every model metric equals `main`'s." in text
    assert "| test accuracy | 0.9000 | 0.9000 | +0.0000 |" in text
    assert "artifact" not in text  # no CI run to link to


def test_a_metric_the_base_lacks_is_new(repo):
    write_results(repo, {**EVALUATE, "top_3_accuracy": 1.0}, TRAIN)
    text = report.render(report.compare(repo, "main"), repo)
    assert "| test top-3 accuracy | — | 1.0000 | — |" in text
    assert "| `reports/evaluate/metrics.json` | `top_3_accuracy` | — | 1.0000 | — |" in text


def test_the_report_folder_holds_the_report_its_tables_and_pictures(repo, tmp_path):
    change_params(repo, 5)
    written = report.write_report(report.compare(repo, "main"), repo, tmp_path / "ci")
    assert sorted(p.name for p in written.parent.iterdir()) == [
        "comment.md",
        "confusion_matrix.png",
        "history.png",
        "metrics_diff.csv",
        "params_diff.csv",
        "report.md",
    ]
    text = written.read_text()
    assert "![Confusion matrix (test)](confusion_matrix.png)" in text
    assert "![Training curves](history.png)" in text
    # a comment or job summary cannot show files beside it: it names them in the artifact
    comment = (written.parent / "comment.md").read_text()
    assert "![" not in comment
    assert "*Training curves: `history.png` in the `pipeline-report` artifact.*" in comment
    assert (
        comment.replace(
            "*Training curves: `history.png` in the `pipeline-report` artifact.*",
            "![Training curves](history.png)",
        ).replace(
            "*Confusion matrix (test): `confusion_matrix.png` in the `pipeline-report` artifact.*",
            "![Confusion matrix (test)](confusion_matrix.png)",
        )
        == text
    )
    params = pd.read_csv(written.parent / "params_diff.csv")
    assert params[["param", "base", "workspace"]].values.tolist() == [["train.epochs", "auto", 5]]


def test_an_unknown_base_says_how_to_fetch_it(repo):
    with pytest.raises(report.ReportError, match="unknown base revision 'origin/main': fetch it"):
        report.compare(repo, "origin/main")


def test_a_workspace_without_results_names_what_is_missing(repo):
    (repo / "reports/evaluate/confusion_matrix.png").unlink()
    (repo / "reports/train/metrics.json").unlink()
    with pytest.raises(report.ReportError) as error:
        report.compare(repo, "main")
    assert str(error.value) == (
        "the workspace has no reports/train/metrics.json, reports/evaluate/confusion_matrix.png:"
        " run the pipeline first (make run)"
    )


def test_a_removed_or_non_numeric_metric_that_changed_is_listed(repo):
    base = {**EVALUATE, "status": "ok"}
    write_results(repo, base, TRAIN)
    git(repo, "commit", "-qam", "a status")
    write_results(
        repo, {k: v for k, v in base.items() if k != "macro_f1"} | {"status": "bad"}, TRAIN
    )
    text = report.render(report.compare(repo, "change"), repo)
    changed = text.split("## Model metrics that differ")[1].split("## Timings")[0]
    assert "| `reports/evaluate/metrics.json` | `macro_f1` | 0.8900 | — | — |" in changed
    assert "| `reports/evaluate/metrics.json` | `status` | `ok` | `bad` | — |" in changed
    assert "0 params and 2 model metrics differ" in text
    assert "| test macro F1 | 0.8900 | — | — |" in text


def test_a_class_named_with_a_pipe_keeps_the_table_whole(repo):
    matrix = pd.DataFrame([[3, 1], [0, 4]], index=["a|b", "c"], columns=["a|b", "c"])
    matrix.rename_axis("true").to_csv(repo / "reports/evaluate/confusion_matrix.csv")
    text = report.render(report.compare(repo, "main"), repo)
    assert "| true \\ predicted | a\\|b | c |" in text
    assert "| **a\\|b** | 3 | 1 |" in text


def test_a_stage_not_run_is_reported_not_dropped(repo):
    (repo / "reports/visualize/metrics.json").unlink()
    text = report.render(report.compare(repo, "main"), repo)
    assert "Not in the workspace (its stage has not run): reports/visualize/metrics.json." in text


def test_a_corrupt_metrics_file_is_named(repo):
    (repo / "reports/evaluate/metrics.json").write_text("{not json")
    with pytest.raises(report.ReportError, match="unreadable in the workspace: reports/evaluate"):
        report.compare(repo, "main")


def test_a_failed_report_keeps_the_previous_one(repo, tmp_path, monkeypatch):
    output = tmp_path / "ci"
    report.write_report(report.compare(repo, "main"), repo, output)
    before = (output / "report.md").read_text()
    change_params(repo, 5)
    monkeypatch.setattr(report, "confusion_markdown", lambda path: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        report.write_report(report.compare(repo, "main"), repo, output)
    assert (output / "report.md").read_text() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ci")] == []
