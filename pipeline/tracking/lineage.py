"""Where a model came from, recorded on its MLflow run so any run can be compared and redone:
code (git commit, dirty flag and the diff), pipeline state (every stage's hashes in
`dvc.lock`), data (the raw folder's DVC hash), environment (the lock file's hash and the
versions that matter) and the DVC experiment it ran as.
"""

import hashlib
import importlib.metadata
import platform
from pathlib import Path

import yaml

from pipeline.common.processes import CommandError, run_command
from pipeline.paths import ROOT

LOCK_FILE = ROOT / "uv.lock"
DVC_LOCK = ROOT / "dvc.lock"
DVC_YAML = ROOT / "dvc.yaml"
PACKAGES = ("tensorflow", "keras", "dvc", "mlflow", "numpy", "scikit-learn")


def _git(*args: str) -> str:
    return run_command(["git", *args], ROOT)


def git_state() -> tuple[dict[str, str], str | None]:
    """Tags for the commit and dirty flag, and when dirty the changes against that commit
    (`git diff HEAD`, then `git status` for files git does not track yet)."""
    try:
        commit = _git("rev-parse", "HEAD").strip()
        tracked = _git("status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, CommandError):
        return {}, None
    tags = {"git.commit": commit, "git.dirty": str(bool(tracked)).lower()}
    if not tracked:
        return tags, None
    diff = _git("diff", "--no-color", "HEAD")
    status = _git("status", "--porcelain")
    return tags, f"{diff}\n# git status --porcelain\n{status}"


def _out_path(out: str | dict) -> str:
    return out if isinstance(out, str) else next(iter(out))


def upstream_stages(stage: str, path: Path = DVC_YAML) -> list[str]:
    """The stages whose outputs `stage` depends on, directly or through others, in
    `dvc.yaml` order: the ones that ran before it in the same `dvc repro`."""
    stages = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages", {})
    if stage not in stages:
        raise KeyError(f"{path.name} has no stage {stage!r} (it has: {', '.join(stages)})")
    producer = {
        _out_path(out): name for name, spec in stages.items() for out in spec.get("outs", [])
    }
    found, todo = set(), [stage]
    while todo:
        for dep in stages[todo.pop()].get("deps", []):
            for out, name in producer.items():
                inside = dep == out or dep.startswith(f"{out}/") or out.startswith(f"{dep}/")
                if inside and name not in found:
                    found.add(name)
                    todo.append(name)
    return [name for name in stages if name in found]


def dvc_stage_hashes(stage: str, lock: Path = DVC_LOCK, spec: Path = DVC_YAML) -> dict[str, str]:
    """One tag per stage upstream of `stage`: each output's path and MD5 as `dvc.lock`
    records them. Those stages ran before `stage` in the same `dvc repro`, so the lock is
    current for them; the lock's entries for `stage` itself and for stages after it still
    describe the previous run and are left out."""
    if not lock.exists() or not spec.exists():
        return {}
    locked = (yaml.safe_load(lock.read_text(encoding="utf-8")) or {}).get("stages", {})
    return {
        f"dvc.stage.{name}": " ".join(
            f"{out['path']}={out.get('md5', '?')}" for out in locked[name].get("outs", [])
        )
        for name in upstream_stages(stage, spec)
        if name in locked
    }


def raw_data_hash(path: Path = DVC_LOCK) -> str | None:
    """The raw folder's DVC hash (`<md5>.dir`): the data version DVC's cache can restore."""
    for out in (
        (yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {})
        .get("stages", {})
        .get("ingest", {})
        .get("outs", [])
    ):
        if out["path"] == "data/raw":
            return out.get("md5")
    return None


def environment() -> dict[str, str]:
    """The lock file's hash and the versions of Python and the packages that shape a run."""
    tags = {"env.python": platform.python_version()}
    if LOCK_FILE.exists():
        tags["env.uv_lock_sha256"] = hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()
    for package in PACKAGES:
        try:
            tags[f"env.{package}"] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return tags
