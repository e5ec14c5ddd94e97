"""Stage `train`: fit the CNN on the split, save it, and record everything in one MLflow run.

Training is reproducible (one seed, optional op determinism) and resumable after a kill
(`training.resume`): an interrupted run continues from its last finished epoch, in the same
MLflow run. Under a distribution strategy (`training.distribute`) every worker runs this
module; the chief alone writes the model, the reports and the MLflow run.
"""

import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

import keras
import pandas as pd
import tensorflow as tf

from pipeline import native_stderr
from pipeline.common.files import single_writer, staged_file, write_csv, write_json
from pipeline.common.log import PipelineError, run_stage
from pipeline.common.names import dataset_name
from pipeline.contracts import (
    Labels,
    RunRecord,
    ValidationResult,
    read_labels,
    read_validation,
    write_labels,
    write_run_record,
)
from pipeline.imagedata.dataset import label_indices, read_split
from pipeline.imagedata.manifest import split_channels
from pipeline.params import Params, TrainParams, load_params, load_raw_params
from pipeline.paths import (
    DATA_DOCS_DIR,
    HISTORY_FILE,
    HISTORY_PNG,
    LABELS_FILE,
    MODEL_FILE,
    MODEL_LABELS_FILE,
    NEAR_DUPLICATES_FILE,
    NEAR_DUPLICATES_PNG,
    PARAMS_FILE,
    PHASES_FILE,
    RESUME_DIR,
    ROOT,
    RUN_FILE,
    SPLIT_DIR,
    SPLIT_MANIFEST,
    TRAIN_METRICS_FILE,
    VALIDATION_FILE,
)
from pipeline.reporting.plots import history_figure, save_figure
from pipeline.tracking import registry, store
from pipeline.tracking.runs import (
    EpochMetrics,
    log_training_result,
    log_training_start,
    training_run,
)
from pipeline.training import distribute
from pipeline.training.devices import DeviceSetup, configure_devices
from pipeline.training.fitting import (
    TrainingInputs,
    build_network,
    class_weights,
    make_fitting,
    run_schedule,
    summarise,
    training_inputs,
)
from pipeline.training.resume import (
    fingerprint,
    history_table,
    prepare_resume,
    recorded_run,
    remember_run,
    start_from_chief_state,
    state_folder,
)
from pipeline.training.shape import (
    resolve_base,
    resolve_input,
    resolve_training,
    resolve_views,
    resolved_params,
)

log = logging.getLogger(__name__)

# What the model's run holds besides the model: the files behind it, where the project has them.
RUN_ARTIFACTS = (PARAMS_FILE, HISTORY_FILE, PHASES_FILE, HISTORY_PNG, TRAIN_METRICS_FILE,
                 LABELS_FILE, MODEL_LABELS_FILE, SPLIT_MANIFEST, VALIDATION_FILE,
                 NEAR_DUPLICATES_FILE, NEAR_DUPLICATES_PNG)  # fmt: skip


def resumable_run(key: str) -> str | None:
    """The MLflow run of an interrupted training of the same params and data, if the store
    still holds it; any other backup is cleared."""
    stale = recorded_run(RESUME_DIR)
    resume_run = prepare_resume(RESUME_DIR, key)
    if stale is not None and resume_run is None:  # a backup of other params or data, gone
        store.end_stale_run(stale)
    if resume_run is not None and not store.run_exists(resume_run):
        log.info(f"MLflow run {resume_run} is gone from the store; starting afresh")
        resume_run = prepare_resume(RESUME_DIR, "")  # clears the backup
    return resume_run


def run_tags(
    setup: DeviceSetup,
    dist: distribute.Distribution,
    inputs: TrainingInputs,
    classes: list[str],
    params: Params,
    base_choice: str,
) -> dict[str, str]:
    """How and on what the model trains, as the run's tags."""
    return {
        "dataset": dataset_name(params.ingest.source, params.ingest.classes),
        "registered_model": params.registered_model,
        "device": setup.device,
        "distribute": dist.describe(),
        "precision_policy": setup.precision,
        "jit_compile": str(setup.jit_compile).lower(),
        "input_cache": inputs.cache,
        "classes": ",".join(classes),
        "train_images": str(inputs.train_images),
        "validation_images": str(inputs.validation_images),
        "transfer_base_choice": base_choice,  # what train.transfer.base became, and why
    }


def prepare_process(seed: int, cfg: TrainParams) -> tuple[DeviceSetup, distribute.Distribution]:
    """Devices, the distribution strategy and the seeds, before any dataset or model."""
    setup = configure_devices(cfg.device, cfg.transfer.base)  # before anything touches a GPU
    dist = distribute.configure(cfg)  # before any dataset or model exists
    keras.utils.set_random_seed(seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    log.info(dist.describe())
    return setup, dist


class GateFailedError(PipelineError):
    """The split this training would use failed the data gate."""


def checked_gate(allowed: bool) -> ValidationResult:
    """The gate's result for the split; stops unless it passed or `allowed` says go on."""
    result = read_validation(VALIDATION_FILE)
    if result.success:
        return result
    unmet = ", ".join(result.failed_names())
    described = f"{result.failed} of {result.evaluated} expectations unmet: {unmet}"
    report = VALIDATION_FILE.relative_to(ROOT)
    if not allowed:
        raise GateFailedError(
            f"the split failed the data gate ({described}; {report}): fix the data and run "
            "`dvc repro validate`, or set train.allow_failed_validation: true to train anyway"
        )
    log.warning(f"training on a split that failed the data gate ({described}): "
                "train.allow_failed_validation is true; the run records it")  # fmt: skip
    return result


def main() -> None:
    params = load_params()
    gate = checked_gate(params.train.allow_failed_validation)
    rows = read_split("train"), read_split("validation")
    params, base_choice = resolve_base(params, rows[0], split_channels(SPLIT_DIR))
    log.info(base_choice)
    cfg = resolve_training(params.train, len(rows[0]))  # batch_size and epochs auto resolved
    setup, dist = prepare_process(params.base.seed, cfg)
    folder = state_folder(dist.cluster)
    # one training at a time per state folder: two would share the backup and the disk cache
    with single_writer(folder.with_name(f"{folder.name}.lock"), "a training"):
        train(params, gate, rows, cfg, setup, dist, folder, base_choice)


def train(params: Params, gate: ValidationResult, rows: tuple[pd.DataFrame, pd.DataFrame],
          cfg: TrainParams, setup: DeviceSetup, dist: distribute.Distribution,
          folder: Path, base_choice: str = "") -> None:  # fmt: skip
    """Build the inputs and the model, fit (resuming an interrupted fit of the same params and
    data), and write and log everything about the model."""
    labels = read_labels(LABELS_FILE)
    classes = labels.classes
    shape = resolve_input(params, rows[0], split_channels(SPLIT_DIR))
    log.info(f"{shape.describe()}; {cfg.epochs} epochs of batch {cfg.batch_size} (train.epochs "
             f"{params.train.epochs}, train.batch_size {params.train.batch_size}); early "
             f"stopping from epoch {cfg.early_stopping.start_from_epoch + 1}")  # fmt: skip
    base = shape.applied(params.base)
    key = fingerprint(params, SPLIT_MANIFEST)
    inputs = training_inputs(base, cfg, dist, classes, rows, key, folder)
    model, transfer = build_network(base, cfg, len(classes), dist.strategy)
    if dist.is_chief:
        experiment_id = store.configure()
        resume_run = resumable_run(key)
    if dist.kind == "multi_worker":
        start_from_chief_state(dist, folder, key)
    loggers = [EpochMetrics()] if dist.is_chief else []
    fitting = make_fitting(model, transfer, cfg, dist, setup.jit_compile, inputs, folder,
                           class_weights(label_indices(rows[0]["label"], classes), len(classes),
                                         cfg.class_weight), loggers)  # fmt: skip
    if not dist.is_chief:
        train_share(fitting, dist, folder)
        return

    with training_run(experiment_id, resume_run) as run_id:
        remember_run(RESUME_DIR, run_id, key)
        if resume_run is None:
            blocks = transfer.blocks if transfer is not None else None
            log_training_start(
                load_raw_params(),
                dist.log_params() | shape.as_params() | resolved_params(cfg),
                run_tags(setup, dist, inputs, classes, params, base_choice),
                model, blocks, gate,
            )  # fmt: skip
        else:
            log.info(f"resuming MLflow run {resume_run} from the last finished epoch")
        started = time.perf_counter()
        with dist.strategy.scope():
            stopper, phases = run_schedule(fitting)
        seconds = time.perf_counter() - started
        table = history_table(RESUME_DIR / "history.csv")
        best, metrics = summarise(table, stopper, fitting, seconds, inputs.train_images)
        views = resolve_views(params.train)
        log.info(f"test-time views: {views} (train.test_time_views {params.train.test_time_views})")
        deployed = replace(labels, test_time_views=views)
        write_outputs(table, phases, metrics, best, model, deployed)
        with native_stderr():
            example = (SPLIT_DIR / rows[1]["path"].iloc[0]).read_bytes()
            registry.log_model(MODEL_FILE, MODEL_LABELS_FILE, example, params.registered_model)
        log_training_result(metrics, phases, RUN_ARTIFACTS, DATA_DOCS_DIR)
        write_run_record(RUN_FILE, RunRecord(run_id, experiment_id))
    shutil.rmtree(RESUME_DIR, ignore_errors=True)  # finished: nothing to resume

    log.info(f"{len(table)} epochs on {setup.device}, {dist.kind} ({setup.precision}, XLA "
             f"{'on' if setup.jit_compile else 'off'}, cache {inputs.cache}); {outcome(metrics)}; "
             f"model -> {MODEL_FILE.relative_to(ROOT)}; MLflow run {run_id}")  # fmt: skip


def train_share(fitting, dist: distribute.Distribution, folder: Path) -> None:
    """A worker's part: train its share, and leave every write to the chief."""
    with dist.strategy.scope():
        run_schedule(fitting)
    shutil.rmtree(folder, ignore_errors=True)
    log.info(f"{dist.describe()}: done; the chief saves the model and logs the run")


def outcome(metrics: dict) -> str:
    return (
        f"kept epoch {metrics['best_epoch']} (val_loss {metrics['best_val_loss']:.4f}, "
        f"val_accuracy {metrics['best_val_accuracy']:.4f}); "
        f"{metrics['images_per_second_later_epochs']} images/s"
    )


def write_outputs(
    table: pd.DataFrame, phases: pd.DataFrame, metrics: dict, best: pd.Series,
    model: keras.Model, labels: Labels,
) -> None:  # fmt: skip
    """The history, phases, curves and metrics, the model, and the labels beside it."""
    write_csv(table, HISTORY_FILE)
    write_csv(phases, PHASES_FILE)
    starts = phases["first_epoch"].tolist()[1:]
    save_figure(history_figure(table, best_epoch=int(best["epoch"]), phase_starts=starts),
                HISTORY_PNG)  # fmt: skip
    write_json(TRAIN_METRICS_FILE, metrics)
    with staged_file(MODEL_FILE) as tmp:
        model.save(tmp)
    # what each output stands for, and the colour the split put behind transparent pixels
    # (prediction converts new images the same way)
    write_labels(MODEL_LABELS_FILE, labels)


if __name__ == "__main__":
    run_stage("train", main)
