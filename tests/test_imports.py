"""The import layers (pyproject.toml, [tool.importlinter]): the pipeline's packages import only
downwards, counting imports inside functions, checked by import-linter's layers contract."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_packages_import_only_downwards():
    run = lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 kept, 0 broken" in run.stdout


def test_an_upward_import_inside_a_function_breaks_the_contract(tmp_path):
    shutil.copytree(
        ROOT / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    planted = tmp_path / "pipeline" / "serving" / "views.py"
    planted.write_text(
        planted.read_text(encoding="utf-8")
        + "\n\ndef _planted():\n    from pipeline.tracking import registry\n\n"
        + "    return registry\n",
        encoding="utf-8",
    )
    run = lint_imports(tmp_path)
    assert run.returncode == 1, run.stdout
    assert "pipeline.serving is not allowed to import pipeline.tracking" in run.stdout
    assert "pipeline.serving.views -> pipeline.tracking.registry" in run.stdout
