"""What an MLflow run holds: params, per-epoch metrics, reports, and what training records
in the one run of its model (`tracking.results`: what evaluate and visualize add to it).
Stages call these functions; none of them imports `mlflow`."""

import logging
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Param, RunTag
from mlflow.tracking import MlflowClient

from pipeline.common.files import file_digest, read_json
from pipeline.contracts import ValidationResult
from pipeline.imagedata.manifest import EXCLUDED, STATE_FILE, read_manifest
from pipeline.paths import ROOT, SPLIT_DIR, SPLIT_MANIFEST
from pipeline.tracking import lineage, store
from pipeline.tracking.lineage import DVC_LOCK

log = logging.getLogger(__name__)

# Sections logged to the model's run; `evaluate` and `visualize` log theirs when they add
# their results.
TRAINING_SECTIONS = ("base", "ingest", "split", "validate", "train")


def flatten_params(params: Mapping, prefix: str = "") -> dict[str, str]:
    """Nested params to dotted keys; a list stays one value, so every run has the same keys."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
        else:
            flat[name] = list_value(value) if isinstance(value, list | tuple) else str(value)
    return flat


def list_value(values: list | tuple) -> str:
    """A list as one line: `12, 25, 50, 100`; a list of mappings `a=1 b=2; a=3 b=4`; empty `[]`.

    Not JSON on purpose: the MLflow UI expands a JSON array over one line per element, which
    makes the compare view's parameter table hard to read.
    """
    if not values:
        return "[]"
    return (
        "; ".join(
            " ".join(f"{k}={v}" for k, v in item.items())
            if isinstance(item, Mapping)
            else str(item)
            for item in values
        )
        if any(isinstance(item, Mapping) for item in values)
        else ", ".join(map(str, values))
    )


class EpochMetrics(keras.callbacks.Callback):
    """Log every epoch's training and validation metrics and learning rate, with the epoch
    number counted from 1 (as Keras prints it) as the step."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        # Added to `logs` too, so Keras' History (which runs after this) records it as well.
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        mlflow.log_metrics({name: float(value) for name, value in logs.items()}, step=epoch + 1)


def log_folder(folder: Path, artifact_path: str, run_id: str | None = None) -> None:
    """Log every file under `folder` to the active run (or to `run_id`, which is not
    re-opened), keeping the layout, except hidden files (the `.gitignore` DVC writes beside
    its outputs is not a report)."""
    log = mlflow.log_artifact if run_id is None else partial(MlflowClient().log_artifact, run_id)
    for file in sorted(folder.rglob("*")):
        relative = file.relative_to(folder)
        if file.is_file() and not any(part.startswith(".") for part in relative.parts):
            parent = relative.parent.as_posix()
            log(str(file), f"{artifact_path}/{parent}" if parent != "." else artifact_path)


def log_sections(raw_params: Mapping, sections: tuple[str, ...], run_id: str | None = None) -> None:
    """The params of `sections`, as written in params.yaml, flattened to dotted keys, on the
    active run (or on `run_id`, which is not re-opened)."""
    flat = flatten_params({name: raw_params[name] for name in sections})
    if run_id is None:
        mlflow.log_params(flat)
        return
    client = MlflowClient()
    recorded = client.get_run(run_id).data.params
    # a later stage re-run with other params (export.formats changed after a failed export):
    # MLflow never changes a logged param, so the values in force go to tags `now.<key>`
    changed = {k: v for k, v in flat.items() if k in recorded and recorded[k] != str(v)}
    if changed:
        log.info(
            f"{', '.join(sections)}: {len(changed)} param(s) changed since run {run_id} recorded "
            f"them ({', '.join(changed)}): the values now in force are its tags now.<key>"
        )
    client.log_batch(
        run_id,
        params=[Param(k, v) for k, v in flat.items() if k not in recorded],
        tags=[RunTag(f"now.{k}", str(v)) for k, v in changed.items()],
    )


# what the tracking server's database says when two runs insert the same dataset at once
DATASET_RACE = ("dataset_pk", "UNIQUE constraint failed: datasets")


def log_input_once_raced(dataset, **kwargs) -> None:
    """`mlflow.log_input`, tried again once when another run inserted the same dataset (the
    same split) between MLflow's check for it and its insert (the server's `log_inputs` is
    not atomic: two pipelines at once against one server hit it); the failed insert was
    rolled back, and the second try finds the dataset and links it."""
    try:
        mlflow.log_input(dataset, **kwargs)
    except mlflow.exceptions.MlflowException as error:
        if not any(mark in str(error) for mark in DATASET_RACE):
            raise
        log.info("the split's dataset was logged by another run at the same moment; linking it")
        mlflow.log_input(dataset, **kwargs)


def model_summary(model: keras.Model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    return "\n".join(lines)


@contextmanager
def training_run(experiment_id: str, resume_run: str | None) -> Iterator[str]:
    """The model's run: a new one (named after the DVC experiment, else the time), or the
    interrupted one being resumed; yields its id."""
    dvc_experiment = os.environ.get("DVC_EXP_NAME")
    # MLflow's own random names repeat here: the seeded `random` module draws the same one
    run_name = dvc_experiment or f"train {time.strftime('%Y-%m-%d %H:%M:%S')}"
    if resume_run is not None:
        run_name = None  # a resumed run keeps its name
    with store.tracked_run(experiment_id, run_id=resume_run, run_name=run_name) as run:
        yield run.info.run_id


def relabel_tags(split_dir: Path = SPLIT_DIR) -> dict[str, str]:
    """The version of data/relabels.csv the split applied (its SHA-256, "none" without the
    file) and what it did, as the split recorded it in split.json."""
    fixes = read_json(split_dir / STATE_FILE).get("relabels") or {}
    return {
        "data.relabels_sha256": fixes.get("sha256") or "none",
        "data.relabels_rows": str(fixes.get("rows", 0)),
        "data.relabelled": str(fixes.get("relabelled", 0)),
        "data.relabels_dropped": str(fixes.get("dropped", 0)),
    }


def log_relabels(manifest: pd.DataFrame) -> None:
    """The label fixes behind this model's data: tags, and the rows the split applied."""
    mlflow.set_tags(relabel_tags())
    applied = manifest[(manifest["relabelled_from"] != "") | (manifest["status"] == EXCLUDED)]
    if len(applied):
        columns = ["raw_path", "relabelled_from", "label", "status", "reason", "split"]
        mlflow.log_text(applied[columns].to_csv(index=False), "lineage/relabels_applied.csv")


def log_training_start(
    raw_params: Mapping,
    strategy_params: dict,
    tags: dict[str, str],
    model: keras.Model,
    transfer_blocks: dict | None,
    validation: ValidationResult,
) -> None:
    """What a new run records before the first epoch: every param behind the model, how and
    on what it trains, its lineage (commit, diff, data and environment hashes), the check its
    data passed, the split as MLflow's dataset input, and the model's structure."""
    git_tags, diff = lineage.git_state()
    raw_hash = lineage.raw_data_hash()
    dvc_experiment = os.environ.get("DVC_EXP_NAME")
    log_sections(raw_params, TRAINING_SECTIONS)
    mlflow.log_params(strategy_params)
    mlflow.set_tags(
        {
            **tags,
            **git_tags,
            **lineage.dvc_stage_hashes("train"),
            **lineage.environment(),
            **({"dvc_experiment": dvc_experiment} if dvc_experiment else {}),
            **({"data.raw_dvc_md5": raw_hash} if raw_hash else {}),
            **validation.tags(),
        }
    )
    if diff is not None:  # what the commit does not hold
        mlflow.log_text(diff, "lineage/git_diff.patch")
    if DVC_LOCK.exists():
        mlflow.log_artifact(str(DVC_LOCK), artifact_path="lineage")
    with warnings.catch_warnings():  # a local path fits two of MLflow's source kinds
        warnings.filterwarnings("ignore", "The specified dataset source can be")
        dataset = mlflow.data.from_pandas(
            read_manifest(SPLIT_MANIFEST),
            source=str(SPLIT_MANIFEST),
            name="split",
            digest=file_digest(SPLIT_MANIFEST)[:32],
        )
    # the split's digest names the data version; the raw folder's DVC hash is what
    # `dvc checkout` can restore it from
    log_input_once_raced(
        dataset, context="training", tags={"raw_dvc_md5": raw_hash} if raw_hash else None
    )
    log_relabels(read_manifest(SPLIT_MANIFEST))
    mlflow.log_text(model_summary(model), "model_summary.txt")
    if transfer_blocks is not None:  # what each block of the schedule holds
        mlflow.log_dict(transfer_blocks, "transfer_blocks.json")
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    mlflow.log_metrics({"params_total": model.count_params(), "params_trainable": trainable})


def log_training_result(
    metrics: dict, phases: pd.DataFrame, artifacts: tuple[Path, ...], data_docs: Path
) -> None:
    """The finished training's metrics, its phases table, and the files behind the model
    (each in the folder it has in the project)."""
    mlflow.log_metrics({k: v for k, v in metrics.items() if v is not None})
    mlflow.log_table(phases, artifact_file="reports/train/phases.json")
    for artifact in artifacts:
        folder = artifact.parent.relative_to(ROOT).as_posix()
        mlflow.log_artifact(str(artifact), artifact_path=None if folder == "." else folder)
    # The Data Docs of the check this model's data passed (their timestamps change on every
    # validation, so they are read here without being a DVC dependency of training).
    mlflow.log_artifacts(str(data_docs), data_docs.relative_to(ROOT).as_posix())
