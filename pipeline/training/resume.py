"""Resuming an interrupted training: what a backup belongs to, where each process keeps its
state, and the epochs it holds.

After every epoch the model, optimizer, schedule, early-stopping state and history are backed
up under `.resume/train/` (outside the outputs DVC deletes before a stage runs), so a run
killed by SIGKILL, SIGTERM or Ctrl-C continues from its last finished epoch, in the same
MLflow run. Under a distribution strategy every worker other than the chief keeps its state
in `.resume/train-<task>-<index>/`, started from a copy of the chief's.
"""

import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd

from pipeline.common.files import file_digest, read_json, write_json
from pipeline.params import Params
from pipeline.paths import RESUME_DIR, ROOT
from pipeline.training import distribute


def fingerprint(params: Params, manifest: Path) -> str:
    """What a backup belongs to: the params that shape training and the data version."""
    shaping = {"base": params.base.model_dump(), "train": params.train.model_dump()}
    text = json.dumps(shaping, sort_keys=True) + file_digest(manifest)
    return hashlib.sha256(text.encode()).hexdigest()


def _recorded(folder: Path) -> dict:
    """What `remember_run` wrote into the backup in `folder`; {} without one."""
    state = folder / "run.json"
    return read_json(state) if state.exists() else {}


def recorded_run(folder: Path) -> str | None:
    """The MLflow run the backup in `folder` belongs to, if there is a backup."""
    return _recorded(folder).get("run_id")


def prepare_resume(folder: Path, key: str) -> str | None:
    """The MLflow run of an interrupted training of the same params and data, if any; a backup
    of anything else is stale and is removed."""
    recorded = _recorded(folder)
    if recorded.get("fingerprint") == key:
        return recorded["run_id"]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return None


def remember_run(folder: Path, run_id: str, key: str) -> None:
    """Which MLflow run this backup belongs to, for `prepare_resume` after a kill."""
    write_json(folder / "run.json", {"run_id": run_id, "fingerprint": key})


def history_table(path: Path) -> pd.DataFrame:
    """Per-epoch metrics with an `epoch` column counted from 1, as Keras prints it and as
    the MLflow steps are numbered."""
    table = pd.read_csv(path)
    table["epoch"] = table["epoch"] + 1
    # an epoch logged just before a kill, and again after the resume, counts once
    return table.drop_duplicates("epoch", keep="last").reset_index(drop=True)


def state_folder(cluster: distribute.Cluster) -> Path:
    """Where this process keeps its training state: RESUME_DIR for the chief, a folder of its
    own beside it for every other worker."""
    if cluster.is_chief:
        return RESUME_DIR
    return RESUME_DIR.with_name(f"{RESUME_DIR.name}-{cluster.task_type}-{cluster.task_index}")


def start_from_chief_state(dist: distribute.Distribution, folder: Path, key: str) -> None:
    """Multi-worker: once the chief has kept or cleared its state, every other worker starts
    from a copy of it (the project folder must be one all workers share, as Keras'
    BackupAndRestore needs), and all check that they resume from the same epoch."""
    distribute.barrier(dist.strategy, 0)  # the chief's state is ready
    if not dist.is_chief:
        shutil.rmtree(folder, ignore_errors=True)
        if RESUME_DIR.exists():
            shutil.copytree(RESUME_DIR, folder, symlinks=True)
        prepare_resume(folder, key)
    history = folder / "history.csv"
    done = len(history_table(history)) if history.exists() else 0
    low, high = distribute.barrier(dist.strategy, done)
    if low != high:
        raise distribute.DistributeError(
            f"the workers would resume from different epochs ({low} to {high}; this one, "
            f"{dist.cluster.task_type} {dist.cluster.task_index}, from {done}): every worker "
            f"must see the chief's {RESUME_DIR.relative_to(ROOT)} (run them in one project "
            "folder on a shared filesystem), or delete it to start afresh"
        )
