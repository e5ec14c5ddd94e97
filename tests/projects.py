"""Throw-away copies of the project for the tests that run the real `dvc repro`.

Building the data (ingest, split, validate) costs about 25 s a copy; it is done once per test
session (`prepared` in conftest.py) and the copies that only change training start from it:
DVC finds those stages' outputs and `dvc.lock` entries unchanged and skips them.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from pipeline.common.processes import CommandError, run_command
from pipeline.paths import ROOT

PROJECT_FILES = ("pipeline", "dvc.yaml", ".dvcignore", "data/relabels.csv")
# who commits in the tests' throw-away repositories (a machine may have no git identity)
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}
# what `dvc repro validate` leaves: the outputs of the data stages, their lock and DVC's cache
PREPARED = ("data", "reports/validate", "dvc.lock", ".dvc/cache")


def kill_when_trained(processes: list[subprocess.Popen], history: Path, epochs: int) -> int:
    """SIGKILL `processes` (training) once `epochs` epochs are in the resume history `history`
    (nothing can be cleaned up); return how many epochs had finished."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and all(p.poll() is None for p in processes):
        if history.exists() and len(history.read_text().splitlines()) > epochs:  # + header
            break
        time.sleep(0.05)
    for process in processes:
        process.kill()
        process.wait()
    return len(history.read_text().splitlines()) - 1


def run(
    args: list[str], cwd: Path, env: dict[str, str], timeout: int = 900, logs: bool = False
) -> str:
    """The command's standard output (`logs`: with the pipeline's log lines, which go to
    standard error, after it); a failure shows both."""
    try:
        return run_command(args, cwd, env, timeout, with_stderr=logs)
    except CommandError as error:
        raise AssertionError(str(error)) from None


def copy_files(names: tuple[str, ...], root: Path) -> None:
    """The files and folders `names` (relative to the project) of this working tree into
    `root`, without bytecode."""
    for name in names:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)


def project_env(root: Path) -> dict[str, str]:
    """The environment a copy of the project in `root` runs in: this environment's Python
    first on PATH, its own MLflow store, no DVC analytics, a git identity."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "DVC_NO_ANALYTICS": "1",
        **GIT_IDENTITY,
    }


def make_project(root: Path, overrides: dict, prepared: Path | None = None) -> dict[str, str]:
    """Copy the project into `root` with `overrides` merged into params.yaml, as a git + DVC
    repository (with `prepared`'s data stages already run and committed); return the
    environment to run it in."""
    from tests.conftest import _merge

    copy_files(PROJECT_FILES, root)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(_merge(params, overrides), sort_keys=False))

    env = project_env(root)
    (root / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n__pycache__/\n")
    run(["git", "init", "-q"], root, env)
    run(["dvc", "init", "-q"], root, env)
    shutil.copy2(ROOT / ".dvc" / "config", root / ".dvc" / "config")  # the project's DVC config
    if prepared is not None:
        for name in PREPARED:
            source, target = prepared / name, root / name
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            else:
                shutil.copy2(source, target)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "project"], root, env)
    return env


def run_stage_alone(
    root: Path, stage: str, overrides: dict | None = None
) -> subprocess.CompletedProcess:
    """`python -m pipeline.<stage>` in a bare copy of the code and params (no data, no DVC):
    how a stage meets missing inputs or bad params."""
    from tests.conftest import _merge

    shutil.copytree(
        ROOT / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    (root / "params.yaml").write_text(yaml.safe_dump(_merge(params, overrides or {})))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    return subprocess.run(
        [sys.executable, "-m", f"pipeline.{stage}"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def stage_error(root: Path, stage: str, overrides: dict | None = None) -> str:
    """What a stage that must fail prints (its standard error), once it is known to have
    exited 1 without a traceback."""
    result = run_stage_alone(root, stage, overrides)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr
