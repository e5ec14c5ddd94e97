"""Stage `train`: fit the CNN on the split, save it, and record everything in one MLflow run.

Training is reproducible (one seed, optional op determinism) and resumable: after every epoch
the model, optimizer, schedule, early-stopping state and history are backed up under
`.resume/train/` (outside the outputs DVC deletes before a stage runs), so a run killed by
SIGKILL, SIGTERM or Ctrl-C continues from its last finished epoch, in the same MLflow run.

Under a distribution strategy (`pipeline.distribute`) every worker runs this module; the chief
alone writes the model, the reports and the MLflow run. The others keep their training state
in `.resume/train-<task>-<index>/`, started from a copy of the chief's, so that after a kill
every worker resumes from the chief's last finished epoch.
"""

import hashlib
import json
import logging
import os
import platform
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from pipeline import CUDA_INIT_FAILED, distribute, lineage, native_stderr, serving, tracking
from pipeline.dataset import choose_cache, image_dataset, label_indices, read_classes, read_split
from pipeline.files import read_json, staged_file, write_csv, write_json
from pipeline.lineage import DVC_LOCK
from pipeline.manifest import read_manifest
from pipeline.model import build_model
from pipeline.params import (
    DeviceParams,
    EarlyStoppingParams,
    OptimizerParams,
    Params,
    TrainParams,
    load_params,
    load_raw_params,
)
from pipeline.paths import (
    CACHE_DIR,
    DATA_DOCS_DIR,
    HISTORY_FILE,
    HISTORY_PNG,
    LABELS_FILE,
    MODEL_FILE,
    MODEL_LABELS_FILE,
    NEAR_DUPLICATES_FILE,
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
from pipeline.plots import history_figure, save_figure
from pipeline.schedule import Phase, ScheduleState, first_phase, next_phase
from pipeline.transfer import TransferModel, build_transfer_model, trainable_count

# Sections logged to the model's run; `evaluate` logs its own section when it adds its results.
LOGGED_SECTIONS = ("base", "ingest", "split", "validate", "train")


@dataclass(frozen=True)
class DeviceSetup:
    device: str
    precision: str
    jit_compile: bool


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16), where it beats float32."""
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def configure_devices(cfg: DeviceParams) -> DeviceSetup:
    """Memory growth, precision policy and XLA, each resolved from `auto` for this machine."""
    with native_stderr(CUDA_INIT_FAILED) as dropped:
        gpus = tf.config.list_physical_devices("GPU")
    if dropped:  # a CUDA build of TensorFlow without a usable driver: one line, not an E0000
        reason = CUDA_INIT_FAILED.search(dropped[0]).group("reason").decode(errors="replace")
        print(f"train: no usable GPU (CUDA: {reason.strip()}); training on the CPU")
    if gpus and cfg.memory_growth != "off":
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
    precision = cfg.mixed_precision
    if precision == "auto":
        precision = "mixed_float16" if gpus else "mixed_bfloat16" if cpu_has_bf16() else "float32"
    keras.mixed_precision.set_global_policy(precision)
    jit = bool(gpus) if cfg.jit_compile == "auto" else cfg.jit_compile == "on"
    device = f"GPU x{len(gpus)}" if gpus else f"CPU ({platform.machine()}, {os.cpu_count()} cores)"
    return DeviceSetup(device, precision, jit)


def make_optimizer(cfg: OptimizerParams, total_steps: int) -> keras.optimizers.Optimizer:
    """Adam with the seed article's per-step decay (Keras 3 InverseTimeDecay) by default."""
    if cfg.schedule == "inverse_time":
        rate = keras.optimizers.schedules.InverseTimeDecay(
            cfg.learning_rate, decay_steps=cfg.decay_steps, decay_rate=cfg.decay_rate
        )
    elif cfg.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=total_steps)
    else:  # constant, or plateau (a callback lowers it)
        rate = cfg.learning_rate
    return keras.optimizers.Adam(learning_rate=rate)


def class_weights(labels: list[int], num_classes: int, mode: str) -> dict[int, float] | None:
    """`balanced`: weights inversely proportional to class frequency in the training split."""
    if mode == "none":
        return None
    present = np.unique(labels)
    weights = compute_class_weight("balanced", classes=present, y=np.asarray(labels))
    return {int(c): float(w) for c, w in zip(present, weights, strict=True)} | {
        c: 1.0 for c in range(num_classes) if c not in present
    }


def save_weights(model: keras.Model, path: Path) -> None:
    """The model's weights alone (no optimizer state), replaced atomically: they load into the
    same architecture whatever is trainable and however it is compiled."""
    with staged_file(path) as tmp, tmp.open("wb") as file:
        np.savez(file, *model.get_weights())


def load_weights(model: keras.Model, path: Path) -> None:
    with np.load(path) as saved:
        model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping whose best value, best epoch, patience count and best weights survive
    a resume, so an interrupted run stops and restores exactly as an uninterrupted one.

    Across the phases of a schedule the best value and weights carry over (a new phase must
    beat what came before), while the patience count starts afresh in each phase."""

    def __init__(self, folder: Path, cfg: EarlyStoppingParams, patience: int, phase: int) -> None:
        super().__init__(
            monitor=cfg.monitor,
            mode="min" if cfg.monitor.endswith("loss") else "max",
            patience=patience,
            restore_best_weights=cfg.restore_best_weights,
            verbose=1,
        )
        self.phase = phase
        self.state_file = folder / "early_stopping.json"
        self.weights_file = folder / "best_weights.npz"

    def saved_state(self) -> dict | None:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else None

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        state = self.saved_state()
        if state is not None:
            self.best, self.best_epoch = state["best"], state["best_epoch"]
            self.wait = state["wait"] if state.get("phase") == self.phase else 0
            if self.restore_best_weights and self.weights_file.exists():
                current = self.model.get_weights()
                load_weights(self.model, self.weights_file)
                self.best_weights = self.model.get_weights()
                self.model.set_weights(current)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        # Both files are replaced atomically: a kill while writing leaves the previous ones.
        if self.best_epoch == epoch and self.restore_best_weights:
            save_weights(self.model, self.weights_file)
        state = {
            "best": float(self.best),
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "phase": self.phase,
        }
        write_json(self.state_file, state)


class ResumablePlateau(keras.callbacks.ReduceLROnPlateau):
    """Reduce-on-plateau whose best value carries over a resume and into the next phase; its
    patience and cooldown counts start afresh in a new phase (whose learning rate is new)."""

    def __init__(self, folder: Path, cfg: OptimizerParams, phase: int) -> None:
        super().__init__(factor=cfg.plateau_factor, patience=cfg.plateau_patience)
        self.phase = phase
        self.state_file = folder / "plateau.json"

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if self.state_file.exists():
            state = json.loads(self.state_file.read_text())
            self.best = state["best"] if state["best"] is not None else self.best
            if state["phase"] == self.phase:
                self.wait, self.cooldown_counter = state["wait"], state["cooldown"]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        state = {
            "best": None if self.best is None else float(self.best),
            "wait": self.wait,
            "cooldown": self.cooldown_counter,
            "phase": self.phase,
        }
        write_json(self.state_file, state)


class PhaseMetrics(keras.callbacks.Callback):
    """Adds the unfrozen block count and trainable parameter count to each epoch's logs (so
    MLflow and the history table get them); runs before the loggers."""

    def __init__(self, unfrozen: int) -> None:
        super().__init__()
        self.unfrozen = unfrozen

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["unfrozen_blocks"] = float(self.unfrozen)
            logs["trainable_params"] = float(trainable_count(self.model))


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' backup of weights, optimizer state and epoch, written so that a kill at any
    moment (even during the very first write) leaves the last complete backup or none: each
    epoch's weights and metadata go to a fresh folder, and renaming one symlink makes it current.
    Keras' own backup writes in place, and a kill mid-write leaves a file h5py cannot open."""

    def __init__(self, folder: Path) -> None:
        super().__init__(str(folder / "current"), delete_checkpoint=False)
        self.folder = folder

    def _save_model(self) -> None:
        target = self.folder / f"epoch-{self._current_epoch}"
        shutil.rmtree(target, ignore_errors=True)  # a write a kill interrupted
        target.mkdir(parents=True)
        self.model.save_weights(target / "latest.weights.h5")
        metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen}
        (target / "training_metadata.json").write_text(json.dumps(metadata))
        link = self.folder / "current.partial"
        link.unlink(missing_ok=True)
        link.symlink_to(target.name)
        link.replace(self.folder / "current")  # the one atomic step
        for old in self.folder.glob("epoch-*"):
            if old != target:
                shutil.rmtree(old, ignore_errors=True)


def backed_up_epochs(folder: Path) -> int | None:
    """The epochs an AtomicBackupAndRestore backup holds (where fit will resume), if any."""
    metadata = folder / "current" / "training_metadata.json"
    return json.loads(metadata.read_text())["epoch"] if metadata.exists() else None


class Throughput(keras.callbacks.Callback):
    """Wall time per epoch, to report images per second for the first and later epochs."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self.start)


def fingerprint(params: Params, manifest: Path) -> str:
    """What a backup belongs to: the params that shape training and the data version."""
    shaping = {"base": params.base.model_dump(), "train": params.train.model_dump()}
    text = json.dumps(shaping, sort_keys=True) + manifest_digest(manifest)
    return hashlib.sha256(text.encode()).hexdigest()


def manifest_digest(manifest: Path) -> str:
    return hashlib.sha256(manifest.read_bytes()).hexdigest()


def prepare_resume(folder: Path, key: str) -> str | None:
    """The MLflow run of an interrupted training of the same params and data, if any; a backup
    of anything else is stale and is removed."""
    state = folder / "run.json"
    if state.exists() and json.loads(state.read_text()).get("fingerprint") == key:
        return json.loads(state.read_text())["run_id"]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return None


def log_validation(result: dict) -> None:
    """Tie the model to the data check it passed: outcome and counts as tags."""
    mlflow.set_tags(
        {
            "validation.status": "passed" if result["success"] else "failed",
            "validation.expectations": str(result["evaluated"]),
            "validation.failed": str(result["failed"]),
            "validation.near_duplicates": str(result.get("near_duplicates", 0)),
        }
    )


def model_summary(model: keras.Model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    return "\n".join(lines)


def log_model(model_file: Path, labels_file: Path, example: bytes, registered_name: str) -> None:
    """Log and register the model as the pyfunc model `serving` defines (base64 images in,
    class and probabilities out, with signature and input example)."""
    # The requirements are given, so MLflow's notes on how it would have guessed them are noise.
    for name in ("mlflow.utils.uv_utils", "mlflow.utils.environment", "mlflow.pyfunc"):
        logging.getLogger(name).setLevel(logging.ERROR)
    serving.log_model(model_file, labels_file, example, registered_name)


def history_table(path: Path) -> pd.DataFrame:
    """Per-epoch metrics with an `epoch` column counted from 1, as Keras prints it and as
    the MLflow steps are numbered."""
    table = pd.read_csv(path)
    table["epoch"] = table["epoch"] + 1
    # an epoch logged just before a kill, and again after the resume, counts once
    return table.drop_duplicates("epoch", keep="last").reset_index(drop=True)


@dataclass
class Fitting:
    """What every phase of a training schedule fits with."""

    model: keras.Model
    transfer: TransferModel | None
    cfg: TrainParams
    resume_dir: Path  # this process's training state (the chief's: RESUME_DIR)
    learning_rate_scale: float  # every learning rate times this (the replica count rule)
    jit_compile: bool
    steps: int  # per epoch
    train_data: Callable[[int], tf.data.Dataset]  # the training batches from a given epoch on
    validation_data: tf.data.Dataset
    class_weight: dict[int, float] | None
    loggers: list[keras.callbacks.Callback]  # the same instances through every phase
    throughput: Throughput


def run_schedule(fitting: Fitting) -> tuple[ResumableEarlyStopping, pd.DataFrame]:
    """Run the phases (one, from scratch) from where a killed run left off; return the early
    stopping of the last phase (its best epoch is the kept one) and a row per phase."""
    cfg, transfer, folder = fitting.cfg, fitting.transfer, fitting.resume_dir
    blocks = len(transfer.blocks) if transfer else 0
    state_file = folder / "schedule.json"
    state = ScheduleState.load(state_file) or ScheduleState(first_phase(cfg, blocks), [])
    while True:
        phase = state.phase
        stopper = run_phase(fitting, phase)
        table = history_table(folder / "history.csv")
        done = int(table["epoch"].max())
        stalled = stopper.wait >= phase.patience
        following, decision = next_phase(cfg, phase, done, stalled, blocks)
        epochs = table[(table["epoch"] > phase.first_epoch) & (table["epoch"] <= done)]
        state.rows.append(
            {
                "phase": phase.index + 1,
                "unfrozen_blocks": phase.unfrozen if transfer else "all",
                "trainable_params": trainable_count(fitting.model),
                "learning_rate": phase.learning_rate * fitting.learning_rate_scale,
                "first_epoch": phase.first_epoch + 1,
                "last_epoch": done,
                "best_val_loss": float(epochs["val_loss"].min()),
                "best_val_accuracy": float(epochs["val_accuracy"].max()),
                "ended": "val_loss stalled" if stalled else "epochs done",
                "decision": decision,
            }
        )
        if transfer is not None:
            print(
                f"train: phase {phase.index + 1} ({phase.unfrozen} of {blocks} blocks unfrozen) "
                f"ended after epoch {done}, {state.rows[-1]['ended']}; {decision}"
            )
        if following is None:
            return stopper, pd.DataFrame(state.rows)
        # the next phase starts from these weights (the best so far, when those are restored)
        save_weights(fitting.model, folder / "phase_start.npz")
        state.phase = following
        state.save(state_file)
        shutil.rmtree(folder / "backup" / f"phase-{phase.index}", ignore_errors=True)


def run_phase(fitting: Fitting, phase: Phase) -> ResumableEarlyStopping:
    """Set what is trainable, recompile with the phase's learning rate, and fit its epochs;
    resumed from the phase's own backup after a kill."""
    model, cfg, folder = fitting.model, fitting.cfg, fitting.resume_dir
    if fitting.transfer is not None:
        fitting.transfer.unfreeze(phase.unfrozen)
    learning_rate = phase.learning_rate * fitting.learning_rate_scale
    optimizer = cfg.optimizer.model_copy(update={"learning_rate": learning_rate})
    model.compile(
        optimizer=make_optimizer(optimizer, fitting.steps * (phase.last_epoch - phase.first_epoch)),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=fitting.jit_compile,
    )
    backup = folder / "backup" / f"phase-{phase.index}"
    start = folder / "phase_start.npz"
    if start.exists() and not backup.exists():
        load_weights(model, start)
    stopper = ResumableEarlyStopping(folder, cfg.early_stopping, phase.patience, phase.index)
    saved = stopper.saved_state()
    history = folder / "history.csv"
    done = int(history_table(history)["epoch"].max()) if history.exists() else 0
    if (
        saved
        and saved["phase"] == phase.index
        and (saved["wait"] >= phase.patience or done >= phase.last_epoch)
    ):  # the phase had ended when the run was killed, before the next one was recorded
        stopper.wait, stopper.best_epoch = saved["wait"], saved["best_epoch"]
        if cfg.early_stopping.restore_best_weights:
            load_weights(model, stopper.weights_file)
        else:
            model.optimizer.build(model.trainable_variables)
            model.load_weights(backup / "current" / "latest.weights.h5")
        return stopper
    callbacks = [PhaseMetrics(phase.unfrozen)] if fitting.transfer is not None else []
    callbacks += fitting.loggers
    if cfg.optimizer.schedule == "plateau":
        callbacks.append(ResumablePlateau(folder, cfg.optimizer, phase.index))
    callbacks += [stopper, fitting.throughput, AtomicBackupAndRestore(backup)]
    model.fit(
        fitting.train_data(backed_up_epochs(backup) or phase.first_epoch),
        validation_data=fitting.validation_data,
        initial_epoch=phase.first_epoch,
        epochs=phase.last_epoch,
        steps_per_epoch=fitting.steps,  # the shuffled training set repeats without end
        class_weight=fitting.class_weight,
        callbacks=callbacks,
        shuffle=False,  # the dataset is shuffled, reproducibly, by its own seed
        verbose=2,
    )
    return stopper


def main() -> None:
    params = load_params()
    base, cfg = params.base, params.train
    setup = configure_devices(cfg.device)  # before anything touches a GPU
    dist = distribute.configure(cfg)  # before any dataset or model exists
    keras.utils.set_random_seed(base.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    print(f"train: {dist.describe()}")

    classes = read_classes()
    shape = (base.image_size, base.image_size, base.channels)
    train_rows, validation_rows = read_split("train"), read_split("validation")
    cache = choose_cache(
        cfg.cache, len(train_rows) + len(validation_rows), base.image_size, base.channels
    )
    key = fingerprint(params, SPLIT_MANIFEST)
    folder = state_folder(dist.cluster)
    # two processes on one machine cannot share an on-disk cache while they write it
    task = "" if dist.is_chief else folder.name.removeprefix(RESUME_DIR.name)
    cache_for = {
        split: CACHE_DIR / f"{split}-{key[:16]}{task}" if cache == "disk" else cache
        for split in ("train", "validation")
    }
    # each worker of a cluster keeps its share of every global batch
    shard = distribute.shard_by_data if dist.kind == "multi_worker" else lambda data: data

    def train_data(first_epoch: int) -> tf.data.Dataset:
        return shard(image_dataset(
            train_rows, classes, base.image_size, base.channels, dist.global_batch,
            shuffle_seed=base.seed, cache=cache_for["train"], first_epoch=first_epoch,
        ))  # fmt: skip

    validation_data = shard(image_dataset(
        validation_rows, classes, base.image_size, base.channels, dist.global_batch,
        cache=cache_for["validation"],
    ))  # fmt: skip
    steps = int(np.ceil(len(train_rows) / dist.global_batch))

    with dist.strategy.scope():  # the variables live on every replica
        if cfg.transfer.base == "none":
            transfer = None
            model = build_model(shape, len(classes), cfg.model, cfg.augmentation, seed=base.seed)
        else:
            transfer = build_transfer_model(
                shape, len(classes), cfg.transfer, cfg.augmentation, seed=base.seed
            )
            model = transfer.model
    train_labels = label_indices(train_rows["label"], classes)

    if dist.is_chief:
        experiment_id = tracking.configure()
        resume_run = prepare_resume(RESUME_DIR, key)
        if resume_run is not None and not tracking.run_exists(resume_run):
            print(f"train: MLflow run {resume_run} is gone from the store; starting afresh")
            resume_run = prepare_resume(RESUME_DIR, "")  # clears the backup
    if dist.kind == "multi_worker":
        start_from_chief_state(dist, folder, key)

    throughput = Throughput()
    fitting = Fitting(
        model=model,
        transfer=transfer,
        cfg=cfg,
        resume_dir=folder,
        learning_rate_scale=dist.learning_rate_scale,
        jit_compile=setup.jit_compile,
        steps=steps,
        train_data=train_data,
        validation_data=validation_data,
        class_weight=class_weights(train_labels, len(classes), cfg.class_weight),
        loggers=[
            *([tracking.EpochMetrics()] if dist.is_chief else []),
            keras.callbacks.CSVLogger(str(folder / "history.csv"), append=True),
        ],
        throughput=throughput,
    )
    if not dist.is_chief:  # trains its share, and leaves every write to the chief
        with dist.strategy.scope():
            run_schedule(fitting)
        shutil.rmtree(folder, ignore_errors=True)
        print(f"train: {dist.describe()}: done; the chief saves the model and logs the run")
        return
    dvc_experiment = os.environ.get("DVC_EXP_NAME")
    # MLflow's own random names repeat here: the seeded `random` module draws the same one
    run_name = dvc_experiment or f"train {time.strftime('%Y-%m-%d %H:%M:%S')}"
    if resume_run is not None:
        run_name = None  # a resumed run keeps its name
    with tracking.tracked_run(experiment_id, run_id=resume_run, run_name=run_name) as run:
        (RESUME_DIR / "run.json").write_text(
            json.dumps({"run_id": run.info.run_id, "fingerprint": key})
        )
        if resume_run is None:
            raw = load_raw_params()
            git_tags, diff = lineage.git_state()
            raw_hash = lineage.raw_data_hash()
            mlflow.log_params(tracking.flatten_params({k: raw[k] for k in LOGGED_SECTIONS}))
            mlflow.log_params(dist.log_params())
            mlflow.set_tags(
                {
                    "device": setup.device,
                    "distribute": dist.describe(),
                    "precision_policy": setup.precision,
                    "jit_compile": str(setup.jit_compile).lower(),
                    "input_cache": cache,
                    "classes": ",".join(classes),
                    "train_images": str(len(train_rows)),
                    "validation_images": str(len(validation_rows)),
                    **git_tags,
                    **lineage.dvc_stage_hashes("train"),
                    **lineage.environment(),
                    **({"dvc_experiment": dvc_experiment} if dvc_experiment else {}),
                    **({"data.raw_dvc_md5": raw_hash} if raw_hash else {}),
                }
            )
            if diff is not None:  # what the commit does not hold
                mlflow.log_text(diff, "lineage/git_diff.patch")
            if DVC_LOCK.exists():
                mlflow.log_artifact(str(DVC_LOCK), artifact_path="lineage")
            log_validation(read_json(VALIDATION_FILE))
            manifest = read_manifest(SPLIT_MANIFEST)
            with warnings.catch_warnings():  # a local path fits two of MLflow's source kinds
                warnings.filterwarnings("ignore", "The specified dataset source can be")
                dataset = mlflow.data.from_pandas(
                    manifest,
                    source=str(SPLIT_MANIFEST),
                    name="split",
                    digest=manifest_digest(SPLIT_MANIFEST)[:32],
                )
            # the split's digest names the data version; the raw folder's DVC hash is what
            # `dvc checkout` can restore it from
            mlflow.log_input(
                dataset, context="training", tags={"raw_dvc_md5": raw_hash} if raw_hash else None
            )
            mlflow.log_text(model_summary(model), "model_summary.txt")
            if transfer is not None:  # what each block of the schedule holds
                mlflow.log_dict(transfer.blocks, "transfer_blocks.json")
            mlflow.log_metrics(
                {
                    "params_total": model.count_params(),
                    "params_trainable": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
                }
            )
        else:
            print(f"train: resuming MLflow run {resume_run} from the last finished epoch")

        started = time.perf_counter()
        with dist.strategy.scope():
            stopper, phases = run_schedule(fitting)
        seconds = time.perf_counter() - started

        table = history_table(RESUME_DIR / "history.csv")
        kept = stopper.best_epoch if cfg.early_stopping.restore_best_weights else len(table) - 1
        best = table.iloc[kept]
        later = throughput.seconds[1:] or throughput.seconds
        metrics = {
            "best_epoch": int(best["epoch"]),
            "epochs_run": len(table),
            "best_val_accuracy": float(best["val_accuracy"]),
            "best_val_loss": float(best["val_loss"]),
            "training_seconds": round(seconds, 2),
            "images_per_second_first_epoch": round(len(train_rows) / throughput.seconds[0], 1)
            if throughput.seconds
            else None,
            "images_per_second_later_epochs": round(len(train_rows) / float(np.mean(later)), 1)
            if later
            else None,
        }
        mlflow.log_metrics({k: v for k, v in metrics.items() if v is not None})
        write_csv(table, HISTORY_FILE)
        write_csv(phases, PHASES_FILE)
        mlflow.log_table(phases, artifact_file="reports/train/phases.json")
        starts = phases["first_epoch"].tolist()[1:]
        figure = history_figure(table, best_epoch=int(best["epoch"]), phase_starts=starts)
        save_figure(figure, HISTORY_PNG)
        write_json(TRAIN_METRICS_FILE, metrics)
        with staged_file(MODEL_FILE) as tmp:
            model.save(tmp)
        # what each output stands for, and the colour the split put behind transparent pixels
        # (prediction converts new images the same way)
        background = list(load_raw_params()["split"]["background"])
        write_json(MODEL_LABELS_FILE, {"classes": classes, "background": background})
        with native_stderr():
            example = (SPLIT_DIR / validation_rows["path"].iloc[0]).read_bytes()
            log_model(MODEL_FILE, MODEL_LABELS_FILE, example, cfg.registered_model)
        for artifact in (
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
        ):
            mlflow.log_artifact(str(artifact), artifact_path=_artifact_folder(artifact))
        # The Data Docs of the check this model's data passed (their timestamps change on every
        # validation, so they are read here without being a DVC dependency of training).
        mlflow.log_artifacts(str(DATA_DOCS_DIR), DATA_DOCS_DIR.relative_to(ROOT).as_posix())
        write_json(RUN_FILE, {"run_id": run.info.run_id, "experiment_id": experiment_id})
    shutil.rmtree(RESUME_DIR, ignore_errors=True)  # finished: nothing to resume

    print(
        f"train: {len(table)} epochs on {setup.device}, {dist.kind} ({setup.precision}, "
        f"XLA {'on' if setup.jit_compile else 'off'}, cache {cache}); kept epoch "
        f"{int(best['epoch'])} (val_loss {best['val_loss']:.4f}, val_accuracy "
        f"{best['val_accuracy']:.4f}); {metrics['images_per_second_later_epochs']} images/s; "
        f"model -> {MODEL_FILE.relative_to(ROOT)}; MLflow run {run.info.run_id}"
    )


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


def _artifact_folder(path: Path) -> str | None:
    """Artifacts keep the folder they have in the project (`reports/train`, `data/split`)."""
    folder = path.parent.relative_to(ROOT).as_posix()
    return None if folder == "." else folder


if __name__ == "__main__":
    main()
