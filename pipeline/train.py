"""Stage `train`: fit the CNN on the split, save it, and record everything in one MLflow run."""

import os
import platform
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf
from mlflow.models import infer_signature

from pipeline import tracking
from pipeline.dataset import image_dataset, read_classes, read_split
from pipeline.files import read_json, staged_file, write_csv, write_json
from pipeline.model import build_model
from pipeline.params import EarlyStoppingParams, OptimizerParams, load_params, load_raw_params
from pipeline.paths import (
    DATA_DOCS_DIR,
    HISTORY_FILE,
    LABELS_FILE,
    MODEL_FILE,
    NEAR_DUPLICATES_FILE,
    PARAMS_FILE,
    ROOT,
    RUN_FILE,
    SPLIT_MANIFEST,
    VALIDATION_FILE,
)

# Sections logged to the model's run; `evaluate` logs its own section when it adds its results.
LOGGED_SECTIONS = ("base", "ingest", "split", "validate", "train")


def configure_devices() -> str:
    """Let TensorFlow grow GPU memory as needed; return the device training runs on."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    return f"GPU x{len(gpus)}" if gpus else f"CPU ({platform.processor() or platform.machine()})"


def make_optimizer(cfg: OptimizerParams) -> keras.optimizers.Optimizer:
    """Adam with the seed article's per-step decay, as a Keras 3 InverseTimeDecay schedule."""
    schedule = keras.optimizers.schedules.InverseTimeDecay(
        initial_learning_rate=cfg.learning_rate,
        decay_steps=cfg.decay_steps,
        decay_rate=cfg.decay_rate,
    )
    return keras.optimizers.Adam(learning_rate=schedule)


def early_stopping(cfg: EarlyStoppingParams) -> keras.callbacks.EarlyStopping:
    """Stop when the monitored validation metric stalls; Keras 3 restores the best epoch's
    weights at the end of training even when it never stops early."""
    return keras.callbacks.EarlyStopping(
        monitor=cfg.monitor,
        mode="min" if cfg.monitor.endswith("loss") else "max",
        patience=cfg.patience,
        restore_best_weights=cfg.restore_best_weights,
        verbose=1,
    )


def history_table(history: keras.callbacks.History) -> pd.DataFrame:
    """Per-epoch metrics with an `epoch` column counted from 1, as Keras prints it and as
    the MLflow steps are numbered."""
    table = pd.DataFrame(history.history)
    table.insert(0, "epoch", [epoch + 1 for epoch in history.epoch])
    return table


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


def log_keras_model(model: keras.Model, sample: np.ndarray) -> None:
    """Log the model in MLflow's Keras flavor with an input/output signature.

    Requirements are pinned here rather than inferred, which would reload the model in a
    subprocess and take longer than a small training run.
    """
    signature = infer_signature(sample, model.predict(sample, verbose=0))
    mlflow.keras.log_model(
        model,
        name="model",
        signature=signature,
        pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
    )


def main() -> None:
    params = load_params()
    base, cfg = params.base, params.train
    device = configure_devices()  # before anything touches a GPU
    keras.utils.set_random_seed(base.seed)

    classes = read_classes()
    shape = (base.image_size, base.image_size, base.channels)
    train_rows, validation_rows = read_split("train"), read_split("validation")
    train_data = image_dataset(
        train_rows, classes, base.image_size, base.channels, cfg.batch_size, shuffle_seed=base.seed
    )
    validation_data = image_dataset(
        validation_rows, classes, base.image_size, base.channels, cfg.batch_size
    )

    model = build_model(shape, len(classes), cfg.model)
    model.compile(
        optimizer=make_optimizer(cfg.optimizer),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )

    experiment_id = tracking.configure()
    run_name = os.environ.get("DVC_EXP_NAME")
    with tracking.tracked_run(experiment_id, run_name=run_name) as run:
        raw = load_raw_params()
        mlflow.log_params(tracking.flatten_params({k: raw[k] for k in LOGGED_SECTIONS}))
        mlflow.set_tags(
            {
                "device": device,
                "classes": ",".join(classes),
                "train_images": str(len(train_rows)),
                "validation_images": str(len(validation_rows)),
                **({"dvc_experiment": run_name} if run_name else {}),
            }
        )
        log_validation(read_json(VALIDATION_FILE))
        mlflow.log_text(model_summary(model), "model_summary.txt")
        mlflow.log_metric("trainable_params", model.count_params())
        stopper = early_stopping(cfg.early_stopping)
        history = model.fit(
            train_data,
            validation_data=validation_data,
            epochs=cfg.epochs,
            callbacks=[tracking.EpochMetrics(), stopper],
            verbose=2,
        )
        table = history_table(history)
        kept = stopper.best_epoch if cfg.early_stopping.restore_best_weights else len(table) - 1
        best = table.iloc[kept]
        mlflow.log_metrics({"best_epoch": int(best["epoch"]), "epochs_run": len(table)})
        write_csv(table, HISTORY_FILE)
        with staged_file(MODEL_FILE) as tmp:
            model.save(tmp)
        sample = next(iter(validation_data.take(1)))[0].numpy()[:2]
        log_keras_model(model, sample)
        for artifact in (
            PARAMS_FILE,
            HISTORY_FILE,
            LABELS_FILE,
            SPLIT_MANIFEST,
            VALIDATION_FILE,
            NEAR_DUPLICATES_FILE,
        ):
            mlflow.log_artifact(str(artifact), artifact_path=_artifact_folder(artifact))
        # The Data Docs of the check this model's data passed (their timestamps change on every
        # validation, so they are read here without being a DVC dependency of training).
        mlflow.log_artifacts(str(DATA_DOCS_DIR), DATA_DOCS_DIR.relative_to(ROOT).as_posix())
        write_json(RUN_FILE, {"run_id": run.info.run_id, "experiment_id": experiment_id})

    print(
        f"train: {len(table)} epochs on {device}; kept epoch {int(best['epoch'])} "
        f"(val_loss {best['val_loss']:.4f}, val_accuracy {best['val_accuracy']:.4f}); "
        f"model -> {MODEL_FILE.relative_to(ROOT)}; MLflow run {run.info.run_id}"
    )


def _artifact_folder(path: Path) -> str | None:
    """Artifacts keep the folder they have in the project (`reports/train`, `data/split`)."""
    folder = path.parent.relative_to(ROOT).as_posix()
    return None if folder == "." else folder


if __name__ == "__main__":
    main()
