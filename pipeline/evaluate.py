"""Stage `evaluate`: predict the test split and report how the model does, class by class.

Predictions keep the manifest's order, so row i of every report is file i of the test split.
The class list comes from the labels file, so a class missing from the test split keeps its
row and column. Results are added to the MLflow run that trained the model.
"""

from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
from PIL import Image
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
)
from sklearn.svm import SVC

from pipeline import tracking
from pipeline.dataset import image_dataset, label_indices, read_classes, read_split
from pipeline.files import write_csv, write_json
from pipeline.params import load_params, load_raw_params
from pipeline.paths import (
    ABUNDANCE_CSV,
    ABUNDANCE_PNG,
    CONFUSION_CSV,
    CONFUSION_PNG,
    EVALUATE_DIR,
    METRICS_FILE,
    MODEL_FILE,
    PER_CLASS_CSV,
    PREDICTIONS_FILE,
    ROOT,
    RUN_FILE,
    SPLIT_DIR,
)
from pipeline.plots import abundance_figure, confusion_figure, save_figure


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


def summary_metrics(
    true: np.ndarray, probabilities: np.ndarray, n_classes: int
) -> dict[str, float]:
    """Headline test metrics, for `dvc metrics` and MLflow."""
    predicted = probabilities.argmax(axis=1)
    labels = list(range(n_classes))
    return {
        "accuracy": float(accuracy_score(true, predicted)),
        "macro_f1": float(
            f1_score(true, predicted, labels=labels, average="macro", zero_division=0)
        ),
        "weighted_f1": float(
            f1_score(true, predicted, labels=labels, average="weighted", zero_division=0)
        ),
        "log_loss": float(log_loss(true, probabilities, labels=labels)),
        "n_images": len(true),
    }


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


def main() -> None:
    params = load_params()
    base = params.base
    classes = read_classes()
    rows = read_split("test")
    data = image_dataset(rows, classes, base.image_size, base.channels, params.evaluate.batch_size)
    model = keras.saving.load_model(MODEL_FILE, safe_mode=True)
    probabilities = model.predict(data, verbose=0)
    true = np.array(label_indices(rows["label"], classes))
    predicted = probabilities.argmax(axis=1)

    predictions = predictions_table(rows["path"], true, probabilities, classes)
    matrix = confusion_matrix(true, predicted, labels=list(range(len(classes))))
    confusion = pd.DataFrame(matrix, index=pd.Index(classes, name="true"), columns=classes)
    abundance = abundance_table(true, predicted, classes)
    metrics = summary_metrics(true, probabilities, len(classes))
    metrics["baseline_svc_accuracy"] = svc_baseline(read_split("train"), rows)

    write_csv(predictions, PREDICTIONS_FILE, float_format="%.6f")
    write_csv(confusion, CONFUSION_CSV, index=True)
    write_csv(abundance, ABUNDANCE_CSV, float_format="%.6f")
    write_csv(per_class_table(true, predicted, classes), PER_CLASS_CSV, float_format="%.6f")
    save_figure(confusion_figure(matrix, classes), CONFUSION_PNG)
    save_figure(abundance_figure(abundance), ABUNDANCE_PNG)
    write_json(METRICS_FILE, metrics)

    experiment_id = tracking.configure()
    run_id = tracking.read_run_id(RUN_FILE)
    with tracking.tracked_run(experiment_id, run_id=run_id):
        mlflow.log_params(tracking.flatten_params({"evaluate": load_raw_params()["evaluate"]}))
        mlflow.log_metrics({f"test_{name}": value for name, value in metrics.items()})
        mlflow.log_artifacts(str(EVALUATE_DIR), artifact_path="reports/evaluate")

    print(
        f"evaluate: test accuracy {metrics['accuracy']:.4f} (SVC baseline on the same split "
        f"{metrics['baseline_svc_accuracy']:.4f}), macro F1 {metrics['macro_f1']:.4f} "
        f"on {metrics['n_images']} images; reports in {EVALUATE_DIR.relative_to(ROOT)}/ "
        f"(MLflow run {run_id})"
    )


if __name__ == "__main__":
    main()
