"""dvc.yaml's deps cannot drift from the code: every module a stage imports, directly or
through other modules, is covered by one of its declared deps (the file or a folder above
it), so `dvc repro` re-runs a stage whenever code it runs has changed."""

import ast
from pathlib import Path

import pytest
import yaml

from pipeline.paths import ROOT


def module_file(root: Path, module: str) -> Path | None:
    """The file of a `pipeline.*` module (a package's `__init__.py`), if it exists."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(root: Path, module: str) -> set[str]:
    """The `pipeline.*` modules one module imports anywhere in its body (an import inside a
    function runs too), with the packages each import executes on the way."""
    source = module_file(root, module)
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from pipeline.pkg import name`: name is a submodule or a name in the package
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] != "pipeline":
                continue
            parts = name.split(".")
            found |= {
                ".".join(parts[:i])
                for i in range(1, len(parts) + 1)
                if module_file(root, ".".join(parts[:i]))
            }
    return found


def import_closure(root: Path, module: str) -> dict[str, list[str]]:
    """Every `pipeline.*` module that running `module` imports, each with the chain of
    imports that reaches it (for the error message)."""
    chains = {module: [module]}
    for parent in range(1, module.count(".") + 1):  # `python -m a.b.c` runs a and a.b first
        chains.setdefault(".".join(module.split(".")[:parent]), [module])
    todo = list(chains)
    while todo:
        current = todo.pop()
        for imported in sorted(imported_modules(root, current)):
            if imported not in chains:
                chains[imported] = [*chains[current], imported]
                todo.append(imported)
    return chains


def package_data(path: Path) -> list[Path]:
    """The files beside a module that it reads, as its `PACKAGE_DATA = (...)` names them
    (relative to its folder)."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [
            "PACKAGE_DATA"
        ]:
            return [path.parent / name for name in ast.literal_eval(node.value)]
    return []


def stage_module(cmd: str) -> str | None:
    """`python -m pipeline.train` -> `pipeline.train`."""
    words = cmd.split()
    if len(words) >= 3 and words[1] == "-m" and words[2].startswith("pipeline."):
        return words[2]
    return None


def dep_paths(stage: dict) -> list[str]:
    return [next(iter(d)) if isinstance(d, dict) else d for d in stage.get("deps", [])]


def undeclared_imports(root: Path) -> list[str]:
    """One line per module a stage runs that none of its deps covers, naming both."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    problems = []
    for name, stage in stages.items():
        module = stage_module(stage["cmd"])
        if module is None:
            continue
        declared = [Path(d) for d in dep_paths(stage)]
        for imported, chain in sorted(import_closure(root, module).items()):
            source = module_file(root, imported)
            for file in [source, *package_data(source)]:
                file = file.relative_to(root)
                if not any(file == dep or dep in file.parents for dep in declared):
                    what = "imports" if file.suffix == ".py" else "reads"
                    problems.append(
                        f"stage '{name}' {what} {file.as_posix()} ({' -> '.join(chain)}), "
                        "which none of its deps in dvc.yaml covers"
                    )
    return problems


def missing_deps(root: Path) -> list[str]:
    """Deps under pipeline/ that name a file or folder that does not exist (moved code)."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    return [
        f"stage '{name}' declares {dep}, which does not exist"
        for name, stage in stages.items()
        for dep in dep_paths(stage)
        if dep.startswith("pipeline") and not (root / dep).exists()
    ]


def test_every_module_a_stage_imports_is_among_its_deps():
    assert undeclared_imports(ROOT) == []


def test_every_code_dep_exists():
    assert missing_deps(ROOT) == []


def test_every_stage_runs_a_pipeline_module():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    assert all(stage_module(stage["cmd"]) for stage in stages.values())


@pytest.fixture
def tiny_project(tmp_path: Path) -> Path:
    """A two-stage project: `pipeline.prepare` imports `pipeline.lib.a`, which imports
    `pipeline.lib.b` inside a function; only the folder `pipeline/lib` is declared."""
    for path, text in {
        "pipeline/__init__.py": "",
        "pipeline/prepare.py": "from pipeline.lib import a\n",
        "pipeline/train.py": "import os\n",
        "pipeline/lib/__init__.py": "",
        "pipeline/lib/a.py": "def f():\n    from pipeline.lib.b import g\n",
        "pipeline/lib/b.py": "g = 1\n",
        "pipeline/lib/page.py": 'PACKAGE_DATA = ("pages",)\n',
        "pipeline/lib/pages/a.html": "",
        "pipeline/other.py": "",
    }.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    stages = {
        "prepare": {
            "cmd": "python -m pipeline.prepare",
            "deps": ["pipeline/__init__.py", "pipeline/prepare.py", "pipeline/lib"],
        },
        "train": {
            "cmd": "python -m pipeline.train",
            "deps": ["pipeline/__init__.py", "pipeline/train.py"],
        },
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    return tmp_path


def test_a_covered_project_passes(tiny_project: Path):
    assert undeclared_imports(tiny_project) == []


def test_a_planted_undeclared_import_is_named_with_its_stage_and_chain(tiny_project: Path):
    (tiny_project / "pipeline/train.py").write_text("import os\nfrom pipeline import other\n")
    assert undeclared_imports(tiny_project) == [
        "stage 'train' imports pipeline/other.py (pipeline.train -> pipeline.other), "
        "which none of its deps in dvc.yaml covers"
    ]


def test_an_import_inside_a_function_counts(tiny_project: Path):
    (tiny_project / "pipeline/lib/b.py").write_text("from pipeline import other\n")
    assert undeclared_imports(tiny_project) == [
        "stage 'prepare' imports pipeline/other.py (pipeline.prepare -> pipeline.lib.a -> "
        "pipeline.lib.b -> pipeline.other), which none of its deps in dvc.yaml covers"
    ]


def test_files_a_module_reads_beside_it_count(tiny_project: Path):
    (tiny_project / "pipeline/train.py").write_text("from pipeline.lib import page\n")
    assert undeclared_imports(tiny_project) == [
        "stage 'train' imports pipeline/lib/__init__.py (pipeline.train -> pipeline.lib), "
        "which none of its deps in dvc.yaml covers",
        "stage 'train' imports pipeline/lib/page.py (pipeline.train -> pipeline.lib.page), "
        "which none of its deps in dvc.yaml covers",
        "stage 'train' reads pipeline/lib/pages (pipeline.train -> pipeline.lib.page), "
        "which none of its deps in dvc.yaml covers",
    ]


def test_a_dep_naming_moved_code_is_reported(tiny_project: Path):
    (tiny_project / "pipeline/lib/b.py").unlink()
    (tiny_project / "pipeline/lib/a.py").write_text("")
    text = (tiny_project / "dvc.yaml").read_text().replace("pipeline/lib", "pipeline/lib/b.py")
    (tiny_project / "dvc.yaml").write_text(text)
    assert missing_deps(tiny_project) == [
        "stage 'prepare' declares pipeline/lib/b.py, which does not exist"
    ]
