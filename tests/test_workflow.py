"""The pull-request workflow: valid for GitHub Actions (the schema GitHub's own editors use,
vendored by check-jsonschema), and running the project's own make targets and files."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from pipeline.paths import CI_REPORT_DIR, ROOT
from pipeline.tools.report import ARTIFACT, COMMENT_NAME

WORKFLOW = ROOT / ".github/workflows/ci.yml"


def check_schema(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.github-workflows",
            str(path),
        ],
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="module")
def steps() -> list[dict]:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]["pipeline"]["steps"]


def run_lines(steps: list[dict]) -> list[str]:
    return [line.strip() for step in steps for line in step.get("run", "").splitlines()]


def test_the_workflow_is_valid_for_github_actions():
    result = check_schema(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path):
    text = WORKFLOW.read_text()
    assert text.count("runs-on:") == 1
    (tmp_path / "ci.yml").write_text(text.replace("runs-on:", "runs_on:"))
    result = check_schema(tmp_path / "ci.yml")
    assert result.returncode == 1
    assert "runs_on" in result.stdout


def test_tests_then_the_pipeline_then_the_report(steps):
    commands = [line for line in run_lines(steps) if line.startswith("make ")]
    assert [c.split()[1] for c in commands] == ["test", "pull", "run", "report"]
    assert 'make report BASE="$BASE"' in commands


def test_every_make_target_it_runs_exists(steps):
    targets = set(re.findall(r"^([a-zA-Z_-]+):", (ROOT / "Makefile").read_text(), re.M))
    used = {line.split()[1] for line in run_lines(steps) if line.startswith("make ")}
    assert used <= targets, used - targets


def test_it_uploads_and_posts_the_report_make_report_writes(steps):
    report_dir = CI_REPORT_DIR.relative_to(ROOT).as_posix()
    [upload] = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["with"]["path"].rstrip("/") == report_dir
    assert upload["with"]["name"] == ARTIFACT  # the name the report sends readers to
    comment = "\n".join(
        run_lines([s for s in steps if s.get("name") == "Comment on the pull request"])
    )
    assert f"--body-file {report_dir}/{COMMENT_NAME}" in comment
    assert f'cat {report_dir}/{COMMENT_NAME} >> "$GITHUB_STEP_SUMMARY"' in run_lines(steps)


def test_it_checks_out_the_base_branch_and_the_projects_python(steps):
    [checkout] = [s for s in steps if s.get("uses", "").startswith("actions/checkout@")]
    assert checkout["with"]["fetch-depth"] == 0  # dvc metrics diff needs the base's commits
    [python] = [s for s in steps if s.get("uses", "").startswith("actions/setup-python@")]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    version = python["with"]["python-version"]
    assert version.count(".") == 1  # a minor version, whose newest patch is taken
    assert f"{version}.0" in SpecifierSet(project["requires-python"])
