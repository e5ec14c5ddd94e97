"""Redo a recorded run and show how the new one compares: `make reproduce RUN=<run id>`.

The run's lineage says what to restore: its git commit (plus the recorded diff when the
checkout was dirty) is checked out into a temporary git worktree, its `params.yaml` artifact
replaces the one there, and DVC restores the data from its cache where it still holds that
version (`dvc.lock` of the commit); otherwise ingest and split make it again from the source.
Then `dvc repro` runs there without DVC's run-cache, so the model is really trained again,
into the same MLflow store. The original and the new run's metrics and lineage are printed
side by side; on CPU with `train.deterministic` every metric but the timings matches exactly,
and the command exits 1 when one does not. Export sizes may differ by a few bytes: a SavedModel
names its traced functions with process-wide counters and stores a hash of them
(`fingerprint.pb`), so its bytes, and at times its size, change with every export; a size
within `SIZE_TOLERANCE` of the original counts as the same.
"""

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from pipeline.common.log import PipelineError, run_stage
from pipeline.common.processes import CommandError, run_command
from pipeline.contracts import read_run_record
from pipeline.evaluation.direction import is_timing
from pipeline.paths import ROOT
from pipeline.tracking.records import (
    RecordedRun,
    copy_params,
    download_artifact,
    mark_reproduction,
    recorded_run,
    tracking_uri,
)

log = logging.getLogger(__name__)

LINEAGE_TAGS = ("git.commit", "git.dirty", "data.raw_dvc_md5", "env.uv_lock_sha256")


class ReproduceError(PipelineError, RuntimeError):
    """The run cannot be reproduced here (unknown run, commit missing, no params)."""


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    try:
        return run_command(args, cwd, env)
    except CommandError as error:
        raise ReproduceError(str(error)) from None


def prepare_checkout(run: RecordedRun, folder: Path) -> list[str]:
    """The run's code and params in `folder` (a git worktree); returns what was done."""
    commit = run.tags.get("git.commit")
    if not commit:
        raise ReproduceError(
            f"run {run.run_id} has no git.commit tag: it was not trained from a git checkout"
        )
    try:
        _run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], ROOT)
    except ReproduceError:
        raise ReproduceError(
            f"run {run.run_id} was trained at commit {commit}, which this repository "
            "does not have (fetch it first)"
        ) from None
    _run(["git", "worktree", "add", "--detach", str(folder), commit], ROOT)
    steps = [f"code: commit {commit[:12]} checked out in {folder}"]
    artifacts = Path(tempfile.mkdtemp(prefix="reproduce-artifacts-"))
    try:
        if run.tags.get("git.dirty") == "true":
            patch = download_artifact(run.run_id, "lineage", artifacts)
            diff = (patch / "git_diff.patch").read_text(encoding="utf-8")
            diff = diff.split("\n# git status --porcelain\n")[0]
            if diff.strip():
                (artifacts / "changes.patch").write_text(diff, encoding="utf-8")
                _run(
                    ["git", "apply", "--whitespace=nowarn", str(artifacts / "changes.patch")],
                    folder,
                )
                steps.append("code: the run's uncommitted changes applied (lineage/git_diff.patch)")
        copy_params(run.run_id, folder / "params.yaml", artifacts)
        steps.append("params: the run's params.yaml")
    finally:
        shutil.rmtree(artifacts, ignore_errors=True)
    return steps


def restore_data(folder: Path, env: dict[str, str], raw_hash: str | None) -> tuple[str, str | None]:
    """Data from DVC's cache when the commit's `dvc.lock` names the run's data version (and
    the gate's result, where the cache holds it); what happened, and the stage to run from
    (None: all of them, the data made again from the source)."""
    lock = folder / "dvc.lock"
    _run(["dvc", "cache", "dir", "--local", str(ROOT / ".dvc" / "cache")], folder, env)
    if not raw_hash or not lock.exists() or raw_hash not in lock.read_text(encoding="utf-8"):
        return "data: version not in the commit's dvc.lock; ingest and split make it again", None
    result = subprocess.run(
        ["dvc", "checkout", "ingest", "split"], cwd=folder, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        return "data: not in DVC's cache any more; ingest and split make it again", None
    validated = subprocess.run(
        ["dvc", "checkout", "validate"], cwd=folder, env=env, capture_output=True, text=True
    )
    if validated.returncode != 0:
        return f"data: raw folder {raw_hash} restored from DVC's cache", "validate"
    return f"data: raw folder {raw_hash} and its validation restored from DVC's cache", "train"


SIZE_TOLERANCE = 0.001  # relative: 65 bytes on the digits' 65 KB SavedModel


def same_size(a: float, b: float) -> bool:
    return abs(b - a) <= SIZE_TOLERANCE * max(abs(a), 1.0)


def side_by_side(original: RecordedRun, new: RecordedRun) -> pd.DataFrame:
    """Every metric of either run, with the verdict per row."""
    names = sorted(set(original.metrics) | set(new.metrics))
    rows = []
    for name in names:
        a, b = original.metrics.get(name), new.metrics.get(name)
        if is_timing(name):
            verdict = "timing"
        elif name.startswith("champion_"):  # the registry's state then, not the model's
            verdict = "registry"
        elif a is None or b is None:
            verdict = "missing"
        elif name.endswith("_size_bytes") and a != b:
            verdict = "size" if same_size(a, b) else "differs"
        else:
            verdict = "same" if a == b else "differs"
        rows.append(
            {
                "metric": name,
                "original": a,
                "reproduction": b,
                "difference": None if a is None or b is None else b - a,
                "verdict": verdict,
            }
        )
    return pd.DataFrame(rows)


def lineage_table(original: RecordedRun, new: RecordedRun) -> pd.DataFrame:
    keys = [*LINEAGE_TAGS, *sorted(k for k in original.tags if k.startswith("env."))]
    return pd.DataFrame(
        [
            {
                "tag": key,
                "original": original.tags.get(key, ""),
                "reproduction": new.tags.get(key, ""),
            }
            for key in dict.fromkeys(keys)
        ]
    )


def reproduce(run_id: str, keep: bool = False) -> tuple[str, pd.DataFrame]:
    """Redo the run; return the new run's id and the side-by-side metrics."""
    original = recorded_run(run_id)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri(),
        "MLFLOW_EXPERIMENT_NAME": original.experiment,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    folder = Path(tempfile.mkdtemp(prefix=f"reproduce-{run_id[:8]}-")) / "project"
    try:
        for step in prepare_checkout(original, folder):
            log.info(step)
        restored, first = restore_data(folder, env, original.tags.get("data.raw_dvc_md5"))
        log.info(restored)
        # from the restored data on: the source folder may have changed since the run
        # the audit works from the split alone, so it is not downstream of validate or train;
        # evaluate reads its suspects: it runs again too (it is deterministic)
        from_stage = ["--downstream", first, "audit"] if first else []
        command = ["dvc", "repro", "--no-run-cache", *from_stage]
        log.info(f"{' '.join(command)} (training again)")
        result = subprocess.run(
            command,
            cwd=folder,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        if result.returncode != 0:
            raise ReproduceError(f"dvc repro failed in {folder}:\n{result.stdout[-4000:]}")
        new_id = read_run_record(folder / "models" / "mlflow_run.json").run_id
    finally:
        if not keep:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT, capture_output=True
            )
            shutil.rmtree(folder.parent, ignore_errors=True)
    new = recorded_run(new_id)
    table = side_by_side(original, new)
    report = (
        f"# Reproduction of run {run_id}\n\nNew run: {new_id}\n\n"
        + table.to_markdown(index=False, floatfmt=".6g")
        + "\n\n## Lineage\n\n"
        + lineage_table(original, new).to_markdown(index=False)
        + "\n"
    )
    mark_reproduction(new_id, original, report)
    print(report)
    return new_id, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_id", help="the MLflow run to reproduce")
    parser.add_argument("--keep", action="store_true", help="keep the temporary checkout")
    args = parser.parse_args()
    _, table = reproduce(args.run_id, keep=args.keep)
    differing = table[table["verdict"].isin(["differs", "missing"])]
    if len(differing):
        raise ReproduceError(
            f"{len(differing)} metrics differ from the original run: "
            + ", ".join(differing["metric"])
        )
    same = int((table["verdict"] == "same").sum())
    sizes = int((table["verdict"] == "size").sum())
    print(
        f"reproduce: all {same} metrics match the original run exactly "
        "(timings and the registry's champion aside"
        + (f"; {sizes} export sizes within {SIZE_TOLERANCE:.1%}" if sizes else "")
        + ")"
    )


if __name__ == "__main__":
    run_stage("reproduce", main)
