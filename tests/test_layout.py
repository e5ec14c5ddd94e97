"""The architecture, checked: the folder tree says what each module is, and the rules
docs/layout.md states about it hold in the code."""

import ast
import re
import subprocess
from pathlib import Path

import yaml

from pipeline.paths import ROOT

PIPELINE = ROOT / "pipeline"
DOCS = ROOT / "docs"
STAGES = {
    stage["cmd"].split()[2]
    for stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values()
}
MAX_FUNCTION_LINES = 60
LONG_ON_PURPOSE = re.compile(r"#.*\b(longer|long) than 60 lines on purpose", re.IGNORECASE)


def modules() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for path in sorted(PIPELINE.rglob("*.py"))
    }


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_only_the_tracking_package_and_the_pyfunc_model_import_mlflow():
    allowed = {"pipeline.serving.pyfunc"}
    importers = sorted(
        name
        for name, path in modules().items()
        if any(i.split(".")[0] == "mlflow" for i in imports(path))
        and not name.startswith("pipeline.tracking")
        and name not in allowed
    )
    assert importers == []


def test_no_stage_imports_a_stage_and_no_library_imports_one():
    offenders = sorted(
        f"{name} imports {imported}"
        for name, path in modules().items()
        for imported in imports(path)
        if imported in STAGES and imported != name
    )
    assert offenders == []


def test_library_code_logs_instead_of_printing():
    """`print` is for the command-line tools' own results; everything else logs."""
    printers = sorted(
        name
        for name, path in modules().items()
        if not name.startswith("pipeline.tools")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"
    )
    assert printers == []


def test_no_function_is_longer_than_60_lines_unless_a_comment_says_why():
    long = []
    for name, path in modules().items():
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                above = "\n".join(lines[max(0, node.lineno - 4) : node.lineno - 1])
                if length > MAX_FUNCTION_LINES and not LONG_ON_PURPOSE.search(above):
                    long.append(f"{name}.{node.name}: {length} lines")
    assert long == []


def documented_tree_modules() -> set[str]:
    """The .py files the folder tree of docs/layout.md names under pipeline/, as paths."""
    text = (DOCS / "layout.md").read_text(encoding="utf-8")
    tree = text.split("## Folder tree", 1)[1].split("```", 2)[1]
    found, folders = set(), []
    for line in tree.splitlines():
        match = re.match(r"^([│ ]*)[├└]── (\S+)", line)
        if not match:
            continue
        depth = len(match[1]) // 4
        folders[depth:] = [match[2].rstrip("/")]
        if match[2].endswith(".py") and folders[0] == "pipeline":
            found.add("/".join(folders))
    return found


def test_the_documented_tree_names_every_module_and_no_other():
    code = {
        path.relative_to(ROOT).as_posix()
        for path in PIPELINE.rglob("*.py")
        if path.name != "__init__.py"
    }
    assert documented_tree_modules() == code


def test_make_help_and_the_make_targets_page_list_the_same_targets():
    """`make help` and the table of docs/make-targets.md name the same targets."""
    listed = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    targets = {re.sub(r"\x1b\[[0-9;]*m", "", line).split()[0] for line in listed.splitlines()}
    table = (DOCS / "make-targets.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`make ([a-z-]+)", table)) | {"help"}
    assert targets == documented


def test_every_test_the_reliability_table_names_exists():
    """docs/reliability.md, "Reliability: bad input and faults": each `file.py::test` (a bare
    `::test` belongs to the file named before it in the row) is a test function in that file."""
    import re

    text = (DOCS / "reliability.md").read_text(encoding="utf-8")
    section = text.split("## Reliability: bad input and faults", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [int(row.split("|")[1]) for row in rows] == list(range(1, 24))
    missing = []
    for row in rows:
        current = None
        for file, name in re.findall(r"`([\w/]+\.py)?::(test_\w+)`", row):
            current = file or current
            source = (ROOT / "tests" / current).read_text(encoding="utf-8")
            if f"def {name}(" not in source:
                missing.append(f"{current}::{name}")
    assert missing == []
