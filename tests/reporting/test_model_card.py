"""The model card: every section drawn from the stages' tables, failure modes included."""

import pandas as pd
import pytest

from pipeline.reporting.model_card import (
    CardInputs,
    calibration_reading,
    confused_pairs,
    description,
    model_card,
)

CLASSES = ["cat", "dog", "o|wl"]


@pytest.fixture
def inputs(raw_params) -> CardInputs:
    confusion = pd.DataFrame(
        [[9, 1, 0], [0, 7, 3], [0, 0, 10]], index=pd.Index(CLASSES, name="true"), columns=CLASSES
    )
    return CardInputs(
        name="image-classifier-pets",
        run_id="abc123",
        run_tags={"git.commit": "deadbeef", "git.dirty": "false"},
        raw_params={**raw_params, "card": {"intended_use": ""}},
        split={
            "fractions": {"train": 0.7, "validation": 0.15, "test": 0.15},
            "placed": 150,
            "seed": 42,
            "left_out": {"rejected": 2},
            "relabels": {"relabelled": 1, "dropped": 0},
        },
        class_counts=pd.DataFrame({"class": CLASSES, "train": [35, 35, 35], "test": [10, 10, 10]}),
        manifest_sha256="f" * 64,
        signature={"input": {"shape": [None, 32, 32, 3]}, "files": {"onnx": "model.onnx"}},
        train_metrics={"epochs_run": 12, "best_epoch": 9, "training_seconds": 61.2},
        metrics={
            "accuracy": 0.8667,
            "macro_f1": 0.86,
            "log_loss": 0.41,
            "n_images": 30,
            "expected_calibration_error": 0.08,
            "baseline_svc_accuracy": 0.7,
            "test_suspects": 2,
            "mistakes_on_suspects": 1,
        },
        per_class=pd.DataFrame(
            {
                "class": CLASSES,
                "precision": [1.0, 0.875, 0.77],
                "recall": [0.9, 0.7, 1.0],
                "f1": [0.95, 0.78, 0.87],
                "support": [10, 10, 10],
            }
        ),
        calibration=pd.DataFrame(
            {
                "bin_lower": [0.0, 0.5, 0.9],
                "bin_upper": [0.5, 0.9, 1.0],
                "images": [0, 10, 20],
                "mean_confidence": [None, 0.7, 0.95],
                "accuracy": [None, 0.6, 0.85],
            }
        ),
        confusion=confusion,
        errors=pd.DataFrame(
            {
                "path": ["test/dog/3.png"],
                "true_label": ["dog"],
                "predicted_label": ["o|wl"],
                "confidence": [0.97],
            }
        ),
        parity=pd.DataFrame(
            {
                "format": ["keras", "onnx"],
                "agreement": [1, 1],
                "disagreements": [0, 0],
                "max_probability_difference": [0, 3e-7],
                "accuracy": [0.8667, 0.8667],
                "accuracy_change": [0, 0],
                "size_bytes": [300_000, 100_000],
                "images_per_second": [900, 2500.4],
            }
        ),
    )


def test_the_card_has_every_section_with_the_numbers(inputs):
    card = model_card(inputs)
    for heading in (
        "# Model card: image-classifier-pets",
        "## Intended use",
        "## Data",
        "## Test results",
        "### Calibration",
        "## Known failure modes",
        "## Exports and their parity with Keras",
        "## Parameters",
    ):
        assert heading in card
    assert "test accuracy 0.8667 on 30 held-out images" in card
    assert "SHA-256 `" + "f" * 64 in card and "1 relabelled, 0 dropped" in card
    assert "left out: 2 rejected" in card
    assert "| dog    | o\\|wl          | 3        | 0.3000" in card  # the top confusion, escaped
    assert "test/dog/3.png" in card
    assert "1 of the mistakes are on the 2 test images the audit suspects" in card
    assert "| onnx     | 1.0000      | 0               | 3.0e-07" in card
    assert "over-confident by 10.0%" in card
    assert "git `deadbeef`" in card and "uncommitted" not in card
    assert "Set `card.intended_use`" in card


def test_the_owner_s_intended_use_replaces_the_drawn_one(inputs):
    inputs.raw_params["card"]["intended_use"] = "Sorting shelter photos for volunteers."
    card = model_card(inputs)
    assert "Sorting shelter photos for volunteers." in card and "Set `card" not in card


def test_the_run_description_leaves_the_parameters_out(inputs):
    card = model_card(inputs)
    short = description(card)
    assert "## Parameters" not in short and short.startswith("# Model card")
    assert len(short) < 8000  # MLflow keeps tags up to 8,000 characters


def test_confusions_and_calibration_read_the_tables():
    counts = pd.DataFrame([[5, 0], [0, 5]], index=["a", "b"], columns=["a", "b"])
    assert confused_pairs(counts).empty
    bins = pd.DataFrame({"images": [4], "mean_confidence": [0.6], "accuracy": [0.9]})
    assert calibration_reading(bins).startswith("on average under-confident by 30.0%")
