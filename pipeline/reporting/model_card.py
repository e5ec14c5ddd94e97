"""The model card (models/model_card.md): what the model is for, the data it learnt from, how
it does class by class, how well its confidence is calibrated, where it fails, and how its
exports compare with it, drawn from the tables the other stages wrote (Markdown: it reads as
text, renders on GitHub, and is the MLflow run's description)."""

from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
import yaml

TEMPLATE = Path(__file__).parent / "templates" / "model_card.md.j2"
FAILURE_ROWS = 5  # confused pairs and confident mistakes listed
PARAMS_HEADING = "## Parameters"  # the section the MLflow description leaves out (run params)


@dataclass
class CardInputs:
    """Everything the card says, as the stages wrote it."""

    name: str  # the registered model
    run_id: str
    run_tags: dict[str, str]  # the training run's: git.commit, git.dirty
    raw_params: dict  # params.yaml as written
    split: dict  # data/split/split.json
    class_counts: pd.DataFrame  # data/split/summary.csv
    manifest_sha256: str
    signature: dict  # models/export/signature.json
    train_metrics: dict
    metrics: dict  # reports/evaluate/metrics.json
    per_class: pd.DataFrame
    calibration: pd.DataFrame
    confusion: pd.DataFrame  # counts, true classes as the index
    errors: pd.DataFrame  # the most confident mistakes
    parity: pd.DataFrame


def markdown(frame: pd.DataFrame, digits: int = 4) -> str:
    """A table in Markdown (a `|` in a cell escaped, so a class name cannot break it)."""
    shown = frame.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.{digits}f}")
        shown[column] = shown[column].astype(str).str.replace("|", r"\|", regex=False)
    return shown.to_markdown(index=False, disable_numparse=True)


def confused_pairs(confusion: pd.DataFrame, count: int = FAILURE_ROWS) -> pd.DataFrame:
    """The most frequent mistakes, as (true, predicted, images, share of the true class)."""
    counts = confusion.to_numpy()
    off = counts.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:count]
    rows = []
    for true, predicted in zip(*np.unravel_index(order, off.shape), strict=True):
        if off[true, predicted]:
            rows.append(
                {
                    "true": str(confusion.index[true]),
                    "predicted as": str(confusion.columns[predicted]),
                    "images": int(off[true, predicted]),
                    "share of the class": off[true, predicted] / max(counts[true].sum(), 1),
                }
            )
    return pd.DataFrame(rows, columns=["true", "predicted as", "images", "share of the class"])


def calibration_reading(calibration: pd.DataFrame) -> str:
    """Whether the model is over- or under-confident, from the bins that hold images."""
    held = calibration.dropna(subset=["accuracy"])
    held = held[held["images"] > 0]
    if held.empty:
        return "no test images."
    gap = float(np.average(held["mean_confidence"] - held["accuracy"], weights=held["images"]))
    side = "over-confident" if gap > 0 else "under-confident"
    return (
        f"on average {side} by {abs(gap):.1%} (mean confidence against accuracy, weighted by "
        "the images in each bin)."
    )


def intended_use(given: str, classes: list[str], source: str, signature: dict) -> str:
    """`card.intended_use` as written, or what the data supports when it is empty."""
    if given.strip():
        return given.strip()
    _, size, _, channels = signature["input"]["shape"]
    colour = "grayscale" if channels == 1 else "colour"
    shown = ", ".join(classes[:12]) + (
        f" and {len(classes) - 12} more" if len(classes) > 12 else ""
    )
    return (
        f"Sorting {colour} images like those of `{source}` into one of {len(classes)} classes "
        f"({shown}). Images are resized to {size}x{size} pixels before the model sees them. "
        "Set `card.intended_use` in params.yaml to say who should use it, and for what."
    )


def header(inputs: CardInputs, classes: list[str]) -> dict:
    """The card's opening: what the model is, where it came from, what it is for."""
    params, metrics, train = inputs.raw_params, inputs.metrics, inputs.train_metrics
    _, size, _, channels = inputs.signature["input"]["shape"]
    return {
        "name": inputs.name,
        "summary": (
            f"A CNN that sorts {size}x{size} {'grayscale' if channels == 1 else 'RGB'} images "
            f"into {len(classes)} classes, test accuracy {metrics['accuracy']:.4f} on "
            f"{metrics['n_images']} held-out images."
        ),
        "run_id": inputs.run_id,
        "commit": inputs.run_tags.get("git.commit", "unknown"),
        "dirty": inputs.run_tags.get("git.dirty") == "true",
        "formats": ", ".join(inputs.signature["files"]) or "none",
        "input": f"uint8 {size}x{size}x{channels}, any image file through `make predict`",
        "training": (
            f"{train.get('epochs_run', '?')} epochs (best {train.get('best_epoch', '?')}), "
            f"{train.get('training_seconds', 0):.0f} s"
        ),
        "intended_use": intended_use(
            params.get("card", {}).get("intended_use", ""),
            classes,
            str(params["ingest"]["source"]),
            inputs.signature,
        ),
        "class_count": len(classes),
    }


def data_section(inputs: CardInputs) -> dict:
    """The data: where it came from, its version, how it was split, the counts per class."""
    ingest, split = inputs.raw_params["ingest"], inputs.split
    left_out = split.get("left_out") or {}
    relabels = split.get("relabels", {})
    return {
        "source": ingest["source"],
        "chosen_classes": ingest.get("classes") or "",
        "manifest_sha256": inputs.manifest_sha256,
        "relabels": (
            f"{relabels.get('relabelled', 0)} relabelled, {relabels.get('dropped', 0)} dropped"
        ),
        "placed": split["placed"],
        "fractions": ", ".join(f"{k} {v:.0%}" for k, v in split["fractions"].items()),
        "seed": split["seed"],
        "left_out": (
            "left out: " + ", ".join(f"{n} {why}" for why, n in left_out.items())
            if left_out
            else "none left out"
        ),
        "class_counts": markdown(inputs.class_counts),
    }


def results_section(inputs: CardInputs) -> dict:
    """The test results: headline, per class, calibration."""
    metrics, calibration = inputs.metrics, inputs.calibration
    headline = {
        "accuracy": metrics["accuracy"],
        "macro F1": metrics["macro_f1"],
        "log loss": metrics["log_loss"],
        "test images": metrics["n_images"],
        "SVC baseline accuracy": metrics.get("baseline_svc_accuracy"),
        "accuracy without label suspects": metrics.get("accuracy_without_suspects"),
    }
    return {
        "headline": markdown(pd.DataFrame([{k: v for k, v in headline.items() if v is not None}])),
        "per_class": markdown(inputs.per_class),
        "ece": f"{metrics['expected_calibration_error']:.4f}",
        "bins": len(calibration),
        "calibration_reading": calibration_reading(calibration),
        "calibration": markdown(calibration[calibration["images"] > 0]),
    }


def failures_section(inputs: CardInputs) -> dict:
    """Known failure modes: the frequent confusions, the confident mistakes, the suspects."""
    metrics = inputs.metrics
    pairs, mistakes = confused_pairs(inputs.confusion), inputs.errors.head(FAILURE_ROWS)
    suspects = metrics.get("test_suspects", 0)
    return {
        "confusions": (
            "Most frequent confusions on the test split:\n\n" + markdown(pairs)
            if len(pairs)
            else "No test image is misclassified."
        ),
        "mistakes": "Most confident mistakes:\n\n" + markdown(mistakes) if len(mistakes) else "",
        "suspects": (
            f"{metrics.get('mistakes_on_suspects', 0)} of the mistakes are on the {suspects} "
            "test images the audit suspects of a wrong label (reports/audit/suspects.csv)."
            if suspects
            else "The audit suspects no test image of a wrong label."
        ),
    }


def parity_section(parity: pd.DataFrame) -> str:
    """The parity table, differences in powers of ten and sizes in kilobytes."""
    shown = parity.astype({"agreement": float, "accuracy": float, "accuracy_change": float})
    shown = shown.assign(
        max_probability_difference=parity["max_probability_difference"].map("{:.1e}".format),
        images_per_second=parity["images_per_second"].map("{:,.0f}".format),
        size_kb=parity["size_bytes"].map(lambda n: f"{n / 1024:,.0f}"),
    )
    return markdown(shown.drop(columns=["size_bytes"]))


def model_card(inputs: CardInputs) -> str:
    """The card's Markdown."""
    classes = [str(c) for c in inputs.per_class["class"]]
    params = inputs.raw_params
    values = {
        **header(inputs, classes),
        **data_section(inputs),
        **results_section(inputs),
        **failures_section(inputs),
        "test_images": inputs.metrics["n_images"],
        "parity": parity_section(inputs.parity),
        "params_heading": PARAMS_HEADING,
        "params": yaml.safe_dump({k: params[k] for k in ("base", "train")}, sort_keys=False),
    }
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE.parent),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # Markdown, not HTML
    )
    return environment.get_template(TEMPLATE.name).render(**values)


def description(card: str) -> str:
    """The card without its parameters (the run lists them): the MLflow run's description."""
    return card.split(PARAMS_HEADING)[0].rstrip() + "\n"
