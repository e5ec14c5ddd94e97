"""`make test` runs the suite on two pytest-xdist workers; the tests that share a trained
project must all run in one worker, or each worker trains its own (tests/conftest.py)."""

import os
import subprocess
import sys

from pipeline.paths import ROOT

CONFTEST = """
import os
import pytest
from tests.conftest import pytest_collection_modifyitems  # the suite's own grouping

@pytest.fixture(scope="session")
def project():
    with open("built.log", "a") as log:
        log.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
"""
TESTS = "".join(
    f"def test_with_{n}(project): pass\ndef test_without_{n}(): pass\n" for n in range(6)
)


def test_the_tests_sharing_a_project_build_it_once_on_two_workers(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_shared.py").write_text(TESTS)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-n",
            "2",
            "--dist",
            "loadgroup",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "--rootdir",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "12 passed" in result.stdout
    assert len((tmp_path / "built.log").read_text().splitlines()) == 1
