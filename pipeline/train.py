"""Stage `train`: fit the CNN on the split, save it, and record everything in one MLflow run.

Training is reproducible (one seed, optional op determinism) and resumable after a kill
(`training.resume`): an interrupted run continues from its last finished epoch, in the same
MLflow run. Under a distribution strategy (`training.distribute`) every worker runs this
module; the chief alone writes the model, the reports and the MLflow run.
"""

import logging
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import pandas as pd
import tensorflow as tf

from pipeline.common.files import single_writer, staged_file, write_csv, write_json
from pipeline.common.log import PipelineError, run_stage
from pipeline.common.names import dataset_name
from pipeline.common.native import native_stderr
from pipeline.contracts import (
    Labels,
    RunRecord,
    ValidationResult,
    read_labels,
    read_validation,
    write_labels,
    write_run_record,
)
from pipeline.imagedata.dataset import read_split
from pipeline.params import Params, load_params, load_raw_params
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
    Fitting,
    Network,
    Plan,
    TrainingInputs,
    build_network,
    make_fitting,
    resolved_settings,
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

log = logging.getLogger(__name__)

# What the model's run holds besides the model: the files behind it, where the project has them.
RUN_ARTIFACTS = (
    PARAMS_FILE,
    HISTORY_FILE,
    PHASES_FILE,
    HISTORY_PNG,
    TRAIN_METRICS_FILE,
    LABELS_FILE,
    MODEL_LABELS_FILE,
    SPLIT_MANIFEST,
    VALIDATION_FILE,
    NEAR_DUPLICATES_FILE,
    NEAR_DUPLICATES_PNG,
)


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


@dataclass(frozen=True)
class Job:
    """A training as this process runs it: everything built before the fit."""

    params: Params  # train.transfer.base resolved; the other autos are in plan.settings
    plan: Plan
    setup: DeviceSetup
    dist: distribute.Distribution
    inputs: TrainingInputs
    network: Network
    labels: Labels  # the split's classes, in order
    rows: tuple[pd.DataFrame, pd.DataFrame]  # the training and validation splits' manifest rows
    folder: Path  # this process's training state
    key: str  # the fingerprint of params and data that a resumed run must match


def run_tags(job: Job) -> dict[str, str]:
    """How and on what the model trains, as the run's tags."""
    params, setup, dist, inputs = job.params, job.setup, job.dist, job.inputs
    return {
        "dataset": dataset_name(params.ingest.source, params.ingest.classes),
        "registered_model": params.registered_model,
        "device": setup.device,
        "distribute": dist.describe(),
        "precision_policy": setup.precision,
        "jit_compile": str(setup.jit_compile).lower(),
        "input_cache": inputs.cache,
        "classes": ",".join(job.labels.classes),
        "train_images": str(inputs.train_images),
        "validation_images": str(inputs.validation_images),
        "transfer_base_choice": job.plan.settings.base_why,  # what train.transfer.base became
    }


def prepare_process(plan: Plan, gpus: int) -> tuple[DeviceSetup, distribute.Distribution]:
    """Devices, the distribution strategy and the seeds, before any dataset or model."""
    settings = plan.settings
    setup = configure_devices(settings.precision, settings.jit_compile, gpus)
    dist = distribute.configure(plan.cfg, settings.distribute, settings.batch_size)
    keras.utils.set_random_seed(plan.seed)
    if plan.cfg.deterministic:
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
    log.warning(
        f"training on a split that failed the data gate ({described}): "
        "train.allow_failed_validation is true; the run records it"
    )
    return result


def main() -> None:
    params = registry.local_transfer_weights(load_params())  # an MLflow URI: a local file
    gate = checked_gate(params.train.allow_failed_validation)
    rows = read_split("train"), read_split("validation")
    labels = read_labels(LABELS_FILE)
    classes = labels.classes
    params, settings, gpus = resolved_settings(params, rows, classes)
    plan = Plan(params.train, settings, params.base.seed)
    setup, dist = prepare_process(plan, gpus)
    folder = state_folder(dist.cluster)
    # one training at a time per state folder: two would share the backup and the disk cache
    with single_writer(folder.with_name(f"{folder.name}.lock"), "a training"):
        key = fingerprint(params, SPLIT_MANIFEST)
        inputs = training_inputs(plan, dist, classes, rows, key, folder)
        network = build_network(plan, len(classes), dist.strategy)
        job = Job(params, plan, setup, dist, inputs, network, labels, rows, folder, key)
        if dist.is_chief:
            train_chief(job, gate)
        else:
            train_share(job)


def train_chief(job: Job, gate: ValidationResult) -> None:
    """The chief's part: its MLflow run (resumed after a kill), the fit, and every output."""
    dist, settings = job.dist, job.plan.settings
    experiment_id = store.configure()
    resume_run = resumable_run(job.key)
    if dist.kind == "multi_worker":
        start_from_chief_state(dist, job.folder, job.key)
    fitting = make_fitting(job.network, job.plan, dist, job.inputs, job.folder, [EpochMetrics()])
    with training_run(experiment_id, resume_run) as run_id:
        remember_run(RESUME_DIR, run_id, job.key)
        if resume_run is None:
            transfer = job.network.transfer
            log_training_start(
                load_raw_params(),
                dist.log_params() | settings.as_params(),
                run_tags(job),
                job.network.model,
                transfer.blocks if transfer is not None else None,
                gate,
            )
        else:
            log.info(f"resuming MLflow run {resume_run} from the last finished epoch")
        metrics = train(job, fitting)
        write_run_record(RUN_FILE, RunRecord(run_id, experiment_id))
    shutil.rmtree(RESUME_DIR, ignore_errors=True)  # finished: nothing to resume
    log.info(f"{finished(job, metrics)}; MLflow run {run_id}")


def train_share(job: Job) -> None:
    """A worker's part: train its share, and leave every write to the chief."""
    if job.dist.kind == "multi_worker":
        start_from_chief_state(job.dist, job.folder, job.key)
    fitting = make_fitting(job.network, job.plan, job.dist, job.inputs, job.folder, [])
    with job.dist.strategy.scope():
        run_schedule(fitting)
    shutil.rmtree(job.folder, ignore_errors=True)
    log.info(f"{job.dist.describe()}: done; the chief saves the model and logs the run")


def finished(job: Job, metrics: dict) -> str:
    """The training's last log line, less its run."""
    setup = job.setup
    return (
        f"{metrics['epochs_run']} epochs on {setup.device}, {job.dist.kind} ({setup.precision}, "
        f"XLA {'on' if setup.jit_compile else 'off'}, cache {job.inputs.cache}); "
        f"{outcome(metrics)}; model -> {MODEL_FILE.relative_to(ROOT)}"
    )


def train(job: Job, fitting: Fitting) -> dict:
    """The chief's part, inside its MLflow run: fit (resuming an interrupted fit of the same
    params and data), then write and log everything about the model; returns its metrics."""
    started = time.perf_counter()
    with job.dist.strategy.scope():
        stopper, phases = run_schedule(fitting)
    seconds = time.perf_counter() - started
    table = history_table(RESUME_DIR / "history.csv")
    best, metrics = summarise(table, stopper, fitting, seconds, job.inputs.train_images)
    views = job.plan.settings.test_time_views
    log.info(f"test-time views: {views} (train.test_time_views, resolved)")
    deployed = replace(job.labels, test_time_views=views)
    write_outputs(table, phases, metrics, best, fitting.model, deployed)
    with native_stderr():
        example = (SPLIT_DIR / job.rows[1]["path"].iloc[0]).read_bytes()
        registry.log_model(MODEL_FILE, MODEL_LABELS_FILE, example, job.params.registered_model)
    log_training_result(metrics, phases, RUN_ARTIFACTS, DATA_DOCS_DIR)
    return metrics


def outcome(metrics: dict) -> str:
    return (
        f"kept epoch {metrics['best_epoch']} (val_loss {metrics['best_val_loss']:.4f}, "
        f"val_accuracy {metrics['best_val_accuracy']:.4f}); "
        f"{metrics['images_per_second_later_epochs']} images/s"
    )


def write_outputs(
    table: pd.DataFrame,
    phases: pd.DataFrame,
    metrics: dict,
    best: pd.Series,
    model: keras.Model,
    labels: Labels,
) -> None:
    """The history, phases, curves and metrics, the model, and the labels beside it."""
    write_csv(table, HISTORY_FILE)
    write_csv(phases, PHASES_FILE)
    starts = phases["first_epoch"].tolist()[1:]
    save_figure(
        history_figure(table, best_epoch=int(best["epoch"]), phase_starts=starts), HISTORY_PNG
    )
    write_json(TRAIN_METRICS_FILE, metrics)
    with staged_file(MODEL_FILE) as tmp:
        model.save(tmp)
    # what each output stands for, and the colour the split put behind transparent pixels
    # (prediction converts new images the same way)
    write_labels(MODEL_LABELS_FILE, labels)


if __name__ == "__main__":
    run_stage("train", main)
