"""Sharing a project: `make push` / `make pull` between clones, `make report` against the
main branch, and what push says without a remote."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.projects import run as _run

pytestmark = pytest.mark.slow


def test_a_second_clone_pulls_data_and_run_cache_and_recomputes_nothing(project, tmp_path, restore):
    """`make push` to a local-directory remote; a fresh clone `make pull`s. With the committed
    dvc.lock every stage is up to date; without it (the lock of a run never committed) DVC's
    run-cache restores every computed stage instead of running it."""
    root, env = project
    restore(root / "mlflow.db", root / "mlartifacts")  # the clones' env records there
    first = tmp_path / "first"
    shutil.copytree(root, first, symlinks=True)
    _run(["git", "add", "-A"], first, env)
    _run(["git", "commit", "-qm", "a run"], first, env)
    remote_env = {**env, "DVC_REMOTE": str(tmp_path / "remote")}
    pushed = _run([sys.executable, "-m", "pipeline.tools.remote", "push"], first, remote_env)
    assert "DVC remote 'shared' ->" in pushed
    assert "shared" not in (first / ".dvc/config").read_text()  # per machine, not committed

    second = tmp_path / "second"
    _run(["git", "clone", "-q", str(first), str(second)], tmp_path, env)
    _run([sys.executable, "-m", "pipeline.tools.remote", "pull"], second, remote_env)
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
    ran = [line for line in output.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'source':"]  # it looks at the source on every repro
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
    ci = {
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "o/r",
        "GITHUB_RUN_ID": "7",
    }
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


def test_push_without_a_remote_says_how_to_name_one(project, tmp_path, restore):
    root, env = project
    restore(root / ".dvc/config.local")  # where a remote would be registered
    env = {k: v for k, v in env.items() if k != "DVC_REMOTE"}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.tools.remote", "push"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "push: error: no DVC remote to push: set DVC_REMOTE to a URL or path" in result.stderr
    named = {**env, "DVC_REMOTE": "nosuchremote"}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.tools.remote", "pull"],
        cwd=root,
        env=named,
        capture_output=True,
        text=True,
    )
    assert "DVC_REMOTE=nosuchremote is neither a URL nor a remote of this project" in result.stderr
