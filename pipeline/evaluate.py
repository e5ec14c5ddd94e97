"""Stage `evaluate`: predict the test split and report how the model does, class by class.

Predictions keep the manifest's order, so row i of every report is file i of the test split.
The class list comes from the labels file, so a class missing from the test split keeps its
row and column. The model must have been trained on exactly those classes, checked before any
prediction. Tables come first; every picture and the HTML report are drawn from them. Results
are added to the MLflow run that trained the model.
"""

import re
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from PIL import Image
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)
from sklearn.svm import SVC

from pipeline import CUDA_INIT_FAILED, native_stderr, promotion, tracking
from pipeline.dataset import image_dataset, label_indices, read_classes, read_split
from pipeline.files import write_csv, write_json
from pipeline.html_report import evaluation_report
from pipeline.params import load_params, load_raw_params
from pipeline.paths import (
    ABUNDANCE_CSV,
    ABUNDANCE_PNG,
    CALIBRATION_CSV,
    CONFUSION_CSV,
    CONFUSION_JSON,
    CONFUSION_NORMALIZED_CSV,
    CONFUSION_PNG,
    ERROR_GALLERY_PNG,
    ERRORS_CSV,
    EVALUATE_DIR,
    EVALUATE_REPORT,
    HISTORY_PNG,
    LABELS_FILE,
    METRICS_FILE,
    MODEL_FILE,
    MODEL_LABELS_FILE,
    PER_CLASS_CSV,
    PREDICTIONS_FILE,
    RELIABILITY_PNG,
    ROOT,
    RUN_FILE,
    SPLIT_DIR,
)
from pipeline.plots import (
    abundance_figure,
    confusion_figure,
    error_gallery_figure,
    reliability_figure,
    row_shares,
    save_figure,
)

MANY_CLASSES = 5  # above this, top-k accuracy is reported


class ModelMismatchError(ValueError):
    """The model file is missing, unreadable, or was trained on other classes."""


def load_checked_model(
    model_path: Path, model_labels: Path, classes: list[str], labels_file: Path = LABELS_FILE
) -> keras.Model:
    """The trained model, once it is known to read and to predict exactly `classes` in order."""
    if not model_path.exists():
        raise ModelMismatchError(f"model file {model_path} is missing: run `dvc repro train`")
    if not model_labels.exists():
        raise ModelMismatchError(
            f"{model_labels} (the classes of {model_path.name}) is missing: run `dvc repro train`"
        )
    try:
        model = keras.saving.load_model(model_path, safe_mode=True)
    except Exception as error:  # zip, h5 or deserialisation errors: all mean the same here
        raise ModelMismatchError(
            f"model file {model_path} cannot be loaded ({type(error).__name__}: {error}); "
            "it is corrupt or not a Keras model: retrain with `dvc repro --force train`"
        ) from error
    trained_on = read_classes(model_labels)
    if trained_on != classes:
        missing = [c for c in classes if c not in trained_on]
        unknown = [c for c in trained_on if c not in classes]
        detail = (
            f"classes in {labels_file.name} the model does not know: {missing}; "
            f"classes the model knows that {labels_file.name} lacks: {unknown}"
            if missing or unknown
            else "same classes in another order"
        )
        raise ModelMismatchError(
            f"{model_path} was trained on {len(trained_on)} classes that do not match the "
            f"{len(classes)} of {labels_file} ({detail}): retrain with `dvc repro train`"
        )
    outputs = model.output_shape[-1]
    if outputs != len(classes):
        raise ModelMismatchError(
            f"{model_path} has {outputs} outputs but {model_labels} lists {len(classes)} classes"
        )
    return model


def predictions_table(
    paths: pd.Series, true: np.ndarray, probabilities: np.ndarray, classes: list[str]
) -> pd.DataFrame:
    """One row per test image: path, true and predicted class, confidence, all probabilities."""
    predicted = probabilities.argmax(axis=1)
    table = pd.DataFrame(
        {
            "path": paths.to_numpy(),
            "true_label": np.asarray(classes, dtype=object)[true],
            "predicted_label": np.asarray(classes, dtype=object)[predicted],
            "confidence": probabilities.max(axis=1),
        }
    )
    for index, name in enumerate(classes):
        table[f"p_{name}"] = probabilities[:, index]
    return table


def per_class_table(true: np.ndarray, predicted: np.ndarray, classes: list[str]) -> pd.DataFrame:
    precision, recall, f1, support = precision_recall_fscore_support(
        true, predicted, labels=list(range(len(classes))), zero_division=0
    )
    return pd.DataFrame(
        {"class": classes, "precision": precision, "recall": recall, "f1": f1, "support": support}
    )


def abundance_table(true: np.ndarray, predicted: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Observed and predicted share of each class, and their difference (+ = over-predicted)."""
    n = len(classes)
    observed = np.bincount(true, minlength=n) / len(true)
    forecast = np.bincount(predicted, minlength=n) / len(predicted)
    return pd.DataFrame(
        {
            "class": classes,
            "observed_share": observed,
            "predicted_share": forecast,
            "difference": forecast - observed,
        }
    )


def svc_baseline(train: pd.DataFrame, test: pd.DataFrame, root: Path = SPLIT_DIR) -> float:
    """Test accuracy of scikit-learn's SVC on the same split: the classic baseline for the
    digits. Images become 16x16 grayscale vectors; at most 5,000 training images are used
    (an SVC's fit grows with the square of that)."""

    def vectors(rows: pd.DataFrame) -> np.ndarray:
        return np.stack(
            [
                np.asarray(
                    Image.open(root / path).convert("L").resize((16, 16)), np.float32
                ).ravel()
                / 255
                for path in rows["path"]
            ]
        )

    sample = train.sample(n=min(len(train), 5000), random_state=0) if len(train) > 5000 else train
    model = SVC(gamma="scale").fit(vectors(sample), sample["label"])
    return float(accuracy_score(test["label"], model.predict(vectors(test))))


def confusion_tables(
    true: np.ndarray, predicted: np.ndarray, classes: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Counts and row-normalised shares (each true class sums to 1; an absent class is 0)."""
    matrix = confusion_matrix(true, predicted, labels=list(range(len(classes))))
    shares = row_shares(matrix)
    index = pd.Index(classes, name="true")
    return (
        pd.DataFrame(matrix, index=index, columns=classes),
        pd.DataFrame(shares, index=index, columns=classes),
    )


def confusion_text(counts: pd.DataFrame, accuracy: float) -> str:
    """The confusion matrix as aligned plain text (a file MLflow's compare view shows whole),
    with the mistakes listed under it, most frequent first."""
    table = counts.copy()
    table.index.name, table.columns.name = "true", "predicted"
    mistakes = [
        (count, true, predicted)
        for true, row in counts.iterrows()
        for predicted, count in row.items()
        if true != predicted and count
    ]
    wrong = sum(m[0] for m in mistakes)
    lines = [
        f"Confusion matrix, test split: {int(counts.to_numpy().sum())} images, "
        f"accuracy {accuracy:.4f}",
        "rows: true class; columns: predicted class",
        "",
        table.to_string(),
        "",
        f"{wrong} mistake{'' if wrong == 1 else 's'}" + (":" if mistakes else ""),
    ]
    lines += [f"  {count} x true {true} predicted {predicted}"
              for count, true, predicted in sorted(mistakes, key=lambda m: -m[0])]  # fmt: skip
    return "\n".join(lines) + "\n"


def calibration_table(true: np.ndarray, probabilities: np.ndarray, bins: int) -> pd.DataFrame:
    """Equal-width bins of top-class confidence: images, mean confidence and accuracy in each."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == true
    edges = np.linspace(0, 1, bins + 1)
    # a confidence of exactly 1 belongs to the last bin
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        count = int(inside.sum())
        rows.append(
            {
                "bin_lower": edges[b],
                "bin_upper": edges[b + 1],
                "images": count,
                "mean_confidence": float(confidence[inside].mean()) if count else np.nan,
                "accuracy": float(correct[inside].mean()) if count else np.nan,
            }
        )
    return pd.DataFrame(rows)


def expected_calibration_error(calibration: pd.DataFrame) -> float:
    """Image-weighted mean gap between confidence and accuracy over the bins."""
    used = calibration[calibration["images"] > 0]
    gaps = (used["accuracy"] - used["mean_confidence"]).abs()
    return float((gaps * used["images"]).sum() / used["images"].sum())


def summary_metrics(
    true: np.ndarray, probabilities: np.ndarray, n_classes: int, top_k: int = 3, bins: int = 10
) -> dict[str, float]:
    """Headline test metrics, for `dvc metrics` and MLflow."""
    predicted = probabilities.argmax(axis=1)
    labels = list(range(n_classes))
    metrics: dict[str, float] = {"accuracy": float(accuracy_score(true, predicted))}
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            true, predicted, labels=labels, average=average, zero_division=0
        )
        metrics |= {
            f"{average}_precision": float(precision),
            f"{average}_recall": float(recall),
            f"{average}_f1": float(f1),
        }
    if n_classes > MANY_CLASSES:
        metrics[f"top_{top_k}_accuracy"] = float(
            top_k_accuracy_score(true, probabilities, k=top_k, labels=labels)
        )
    metrics["log_loss"] = float(log_loss(true, probabilities, labels=labels))
    metrics["expected_calibration_error"] = expected_calibration_error(
        calibration_table(true, probabilities, bins)
    )
    metrics["n_images"] = len(true)
    return metrics


def abundance_extremes(abundance: pd.DataFrame, count: int = 3) -> dict[str, list[dict]]:
    """The classes predicted most above and most below their observed share."""
    ordered = abundance.sort_values("difference", kind="stable")
    pick = ["class", "observed_share", "predicted_share", "difference"]
    over = ordered[ordered["difference"] > 0].iloc[::-1].head(count)
    under = ordered[ordered["difference"] < 0].head(count)
    return {
        "over_predicted": over[pick].to_dict("records"),
        "under_predicted": under[pick].to_dict("records"),
    }


def confident_errors(predictions: pd.DataFrame, count: int) -> pd.DataFrame:
    """The `count` mistakes the model was surest of, surest first."""
    wrong = predictions[predictions["true_label"] != predictions["predicted_label"]]
    columns = ["path", "true_label", "predicted_label", "confidence"]
    return wrong.sort_values("confidence", ascending=False, kind="stable")[columns].head(count)


def metric_key(name: str) -> str:
    """A class name as part of an MLflow metric name (letters, digits, `_-./ ` only)."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name)


def predict_rows(
    model: keras.Model,
    rows: pd.DataFrame,
    classes: list[str],
    image_size: int,
    channels: int,
    batch_size: int,
    root: Path = SPLIT_DIR,
) -> np.ndarray:
    """Class probabilities for `rows`, row i for file i: an unshuffled, uncached dataset."""
    data = image_dataset(rows, classes, image_size, channels, batch_size, root=root, cache="off")
    probabilities = model.predict(data, verbose=0)
    if len(probabilities) != len(rows):
        raise RuntimeError(f"{len(probabilities)} predictions for {len(rows)} images")
    return probabilities


def gallery_images(errors: pd.DataFrame, root: Path = SPLIT_DIR) -> list[np.ndarray]:
    """The mistaken images as the files hold them (not as the model saw them resized)."""
    return [np.asarray(Image.open(root / path).convert("RGB")) for path in errors["path"]]


def main() -> None:
    params = load_params()
    base, cfg = params.base, params.evaluate
    classes = read_classes()
    with native_stderr(CUDA_INIT_FAILED):  # train already said which device there is
        model = load_checked_model(MODEL_FILE, MODEL_LABELS_FILE, classes)
    rows = read_split("test")
    probabilities = predict_rows(
        model, rows, classes, base.image_size, base.channels, cfg.batch_size
    )
    true = np.array(label_indices(rows["label"], classes))
    predicted = probabilities.argmax(axis=1)
    mistakes = int((predicted != true).sum())

    predictions = predictions_table(rows["path"], true, probabilities, classes)
    counts, shares = confusion_tables(true, predicted, classes)
    abundance = abundance_table(true, predicted, classes)
    per_class = per_class_table(true, predicted, classes)
    calibration = calibration_table(true, probabilities, cfg.calibration_bins)
    errors = confident_errors(predictions, cfg.gallery_size)
    extremes = abundance_extremes(abundance)
    metrics = summary_metrics(true, probabilities, len(classes), cfg.top_k, cfg.calibration_bins)
    metrics["baseline_svc_accuracy"] = svc_baseline(read_split("train"), rows)
    metrics["per_class_f1"] = dict(zip(classes, per_class["f1"].astype(float), strict=True))

    write_csv(predictions, PREDICTIONS_FILE, float_format="%.6f")
    write_csv(counts, CONFUSION_CSV, index=True)
    write_csv(shares, CONFUSION_NORMALIZED_CSV, index=True, float_format="%.6f")
    write_json(
        CONFUSION_JSON,
        {
            "classes": classes,
            "counts": counts.to_numpy().tolist(),
            "row_normalized": shares.round(6).to_numpy().tolist(),
        },
    )
    write_csv(abundance, ABUNDANCE_CSV, float_format="%.6f")
    write_csv(per_class, PER_CLASS_CSV, float_format="%.6f")
    write_csv(calibration, CALIBRATION_CSV, float_format="%.6f")
    write_csv(errors, ERRORS_CSV, float_format="%.6f")
    figures = {
        CONFUSION_PNG: confusion_figure(counts.to_numpy(), classes),
        ABUNDANCE_PNG: abundance_figure(abundance),
        RELIABILITY_PNG: reliability_figure(calibration, metrics["expected_calibration_error"]),
        ERROR_GALLERY_PNG: error_gallery_figure(
            gallery_images(errors),
            [
                f"true {t}\npredicted {p} ({c:.0%})"
                for t, p, c in errors[["true_label", "predicted_label", "confidence"]].itertuples(
                    index=False
                )
            ],
        ),
    }
    for path, figure in figures.items():
        save_figure(figure, path)
    write_json(METRICS_FILE, metrics)

    experiment_id = tracking.configure()
    run_id = tracking.read_run_id(RUN_FILE)
    EVALUATE_REPORT.write_text(
        evaluation_report(
            metrics=metrics,
            per_class=per_class,
            extremes=extremes,
            calibration=calibration,
            errors=errors,
            pictures={
                "history": HISTORY_PNG,
                "confusion": CONFUSION_PNG,
                "abundance": ABUNDANCE_PNG,
                "reliability": RELIABILITY_PNG,
                "gallery": ERROR_GALLERY_PNG,
            },
            run_id=run_id,
            model_file=MODEL_FILE.relative_to(ROOT).as_posix(),
            top_k=cfg.top_k,
            confusion=counts,
            mistakes=mistakes,
        ),
        encoding="utf-8",
    )

    with tracking.tracked_run(experiment_id, run_id=run_id):
        mlflow.log_params(tracking.flatten_params({"evaluate": load_raw_params()["evaluate"]}))
        flat = {f"test_{k}": v for k, v in metrics.items() if not isinstance(v, dict)}
        for row in per_class.itertuples(index=False):
            key = metric_key(row[0])
            flat |= {
                f"test_f1_{key}": row.f1,
                f"test_precision_{key}": row.precision,
                f"test_recall_{key}": row.recall,
            }
        mlflow.log_metrics(flat)
        tracking.log_folder(EVALUATE_DIR, "reports/evaluate")
        # MLflow's run comparison previews, side by side, only the files at the top of the
        # runs' artifacts: the ones worth comparing between two models go there as well.
        # A wide CSV shows three columns there, so the matrix also goes as plain text.
        for path in (CONFUSION_PNG, CONFUSION_CSV, PER_CLASS_CSV, HISTORY_PNG):
            mlflow.log_artifact(str(path))
        mlflow.log_text(confusion_text(counts, metrics["accuracy"]), "confusion_matrix.txt")
        long_form = counts.stack().rename("count").reset_index()
        long_form.columns = ["true", "predicted", "count"]
        mlflow.log_table(long_form, artifact_file="reports/evaluate/confusion_matrix_table.json")
        # one pipeline at a time reads and moves the alias (on SQLite; see promotion.py)
        with tracking.store_lock(mlflow.get_tracking_uri()):
            decision = promotion.promote(
                MlflowClient(), params.train.registered_model, run_id, cfg.promote_on,
                metrics[cfg.promote_on],
            )  # fmt: skip
        mlflow.set_tags(decision.tags(cfg.promote_on))
        if decision.champion_value is not None:
            mlflow.log_metric(f"champion_previous_test_{cfg.promote_on}", decision.champion_value)

    over = ", ".join(f"{e['class']} {e['difference']:+.1%}" for e in extremes["over_predicted"])
    print(
        f"evaluate: test accuracy {metrics['accuracy']:.4f} (SVC baseline on the same split "
        f"{metrics['baseline_svc_accuracy']:.4f}), macro F1 {metrics['macro_f1']:.4f}, ECE "
        f"{metrics['expected_calibration_error']:.4f} on {metrics['n_images']} images; "
        f"{mistakes} mistakes; most over-predicted: {over or 'none'}; "
        f"report {EVALUATE_REPORT.relative_to(ROOT)} (MLflow run {run_id})"
    )
    alias = f"models:/{params.train.registered_model}@{promotion.ALIAS}"
    where = decision.version if decision.promoted else decision.champion_version
    print(
        f"evaluate: {alias} {'-> version' if decision.promoted else 'stays at version'} "
        f"{where} ({decision.reason})"
    )


if __name__ == "__main__":
    main()
