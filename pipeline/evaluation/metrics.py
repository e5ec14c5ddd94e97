"""The evaluation's tables and headline metrics, computed from true labels and predicted
probabilities (scikit-learn's metrics); the SVC baseline on the same split."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)
from sklearn.svm import SVC

from pipeline.params import EvaluateParams
from pipeline.paths import SPLIT_DIR
from pipeline.reporting.plots import row_shares
from pipeline.serving.inference import prediction_table

MANY_CLASSES = 5  # above this, top-k accuracy is reported


def predictions_table(
    paths: pd.Series, true: np.ndarray, probabilities: np.ndarray, classes: list[str]
) -> pd.DataFrame:
    """One row per test image: path, true and predicted class, confidence, all probabilities."""
    table = prediction_table(probabilities, classes).rename(
        columns={"predicted": "predicted_label"}
    )
    table.insert(0, "true_label", np.asarray(classes, dtype=object)[true])
    table.insert(0, "path", paths.to_numpy())
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
    lines += [
        f"  {count} x true {true} predicted {predicted}"
        for count, true, predicted in sorted(mistakes, key=lambda m: -m[0])
    ]
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


def suspect_effect(predictions: pd.DataFrame, suspects: pd.DataFrame) -> dict[str, float]:
    """What the images the audit suspects of a wrong label do to the test score: accuracy
    without them, and on them how often the model agrees with the given label and how often
    with the suggested one (agreeing with the suggestion: the mistake is likely the label's)."""
    suggested = dict(zip(suspects["path"], suspects["suggested_label"], strict=True))
    flagged = predictions["path"].isin(suggested.keys())
    correct = predictions["true_label"] == predictions["predicted_label"]
    agrees = predictions.loc[flagged, "predicted_label"] == predictions.loc[flagged, "path"].map(
        suggested
    )
    effect = {
        "test_suspects": int(flagged.sum()),
        "mistakes_on_suspects": int((~correct & flagged).sum()),
        "suspects_predicted_as_given": int(correct[flagged].sum()),
        "suspects_predicted_as_suggested": int(agrees.sum()),
    }
    if (~flagged).any():
        effect["accuracy_without_suspects"] = float(correct[~flagged].mean())
    return effect


def confident_errors(predictions: pd.DataFrame, count: int) -> pd.DataFrame:
    """The `count` mistakes the model was surest of, surest first."""
    wrong = predictions[predictions["true_label"] != predictions["predicted_label"]]
    columns = ["path", "true_label", "predicted_label", "confidence"]
    return wrong.sort_values("confidence", ascending=False, kind="stable")[columns].head(count)


def gallery_images(errors: pd.DataFrame, root: Path = SPLIT_DIR) -> list[np.ndarray]:
    """The mistaken images as the files hold them (not as the model saw them resized)."""
    return [np.asarray(Image.open(root / path).convert("RGB")) for path in errors["path"]]


@dataclass
class Evaluation:
    """Every table and headline number of one evaluation, row i of `predictions` for file i."""

    predictions: pd.DataFrame
    counts: pd.DataFrame  # confusion matrix
    shares: pd.DataFrame  # row-normalised
    abundance: pd.DataFrame
    per_class: pd.DataFrame
    calibration: pd.DataFrame
    errors: pd.DataFrame  # the surest mistakes, for the gallery
    extremes: dict[str, list[dict]]
    metrics: dict
    mistakes: int


def evaluate_predictions(
    paths: pd.Series,
    true: np.ndarray,
    probabilities: np.ndarray,
    classes: list[str],
    cfg: EvaluateParams,
) -> Evaluation:
    """Tables first; every picture and page is drawn from them."""
    predicted = probabilities.argmax(axis=1)
    predictions = predictions_table(paths, true, probabilities, classes)
    counts, shares = confusion_tables(true, predicted, classes)
    abundance = abundance_table(true, predicted, classes)
    per_class = per_class_table(true, predicted, classes)
    metrics = summary_metrics(true, probabilities, len(classes), cfg.top_k, cfg.calibration_bins)
    metrics["per_class_f1"] = dict(zip(classes, per_class["f1"].astype(float), strict=True))
    return Evaluation(
        predictions=predictions,
        counts=counts,
        shares=shares,
        abundance=abundance,
        per_class=per_class,
        calibration=calibration_table(true, probabilities, cfg.calibration_bins),
        errors=confident_errors(predictions, cfg.gallery_size),
        extremes=abundance_extremes(abundance),
        metrics=metrics,
        mistakes=int((predicted != true).sum()),
    )
