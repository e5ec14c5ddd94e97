from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation.metrics import (
    abundance_extremes,
    abundance_table,
    calibration_table,
    confident_errors,
    confusion_tables,
    expected_calibration_error,
    per_class_table,
    predictions_table,
    summary_metrics,
)

CLASSES = ["ant", "bee", "cow"]
LABELS = Path("data/split/labels.json")  # where the classes asked for come from


def test_predictions_stay_aligned_with_their_files():
    paths = pd.Series(["test/ant/1.png", "test/bee/2.png", "test/cow/3.png", "test/ant/4.png"])
    true = np.array([0, 1, 2, 0])
    probabilities = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    table = predictions_table(paths, true, probabilities, CLASSES)
    assert table["path"].tolist() == paths.tolist()
    assert table["true_label"].tolist() == ["ant", "bee", "cow", "ant"]
    assert table["predicted_label"].tolist() == ["ant", "bee", "ant", "cow"]
    assert table["confidence"].tolist() == [0.9, 0.7, 0.6, 0.8]
    assert table.columns.tolist()[-3:] == ["p_ant", "p_bee", "p_cow"]


def test_class_absent_from_test_keeps_its_row():
    true = np.array([0, 0, 1, 1])
    predicted = np.array([0, 2, 1, 1])  # "cow" is never true, once predicted
    abundance = abundance_table(true, predicted, CLASSES)
    assert abundance["class"].tolist() == CLASSES
    assert abundance["observed_share"].tolist() == [0.5, 0.5, 0.0]
    assert abundance["predicted_share"].tolist() == [0.25, 0.5, 0.25]
    assert abundance["difference"].tolist() == [-0.25, 0.0, 0.25]
    per_class = per_class_table(true, predicted, CLASSES)
    assert per_class.set_index("class").loc["cow", "support"] == 0


def test_summary_metrics_known_answer():
    true = np.array([0, 1, 2, 2])
    probabilities = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]])
    metrics = summary_metrics(true, probabilities, 3)
    assert metrics["accuracy"] == 0.75
    assert metrics["n_images"] == 4
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert metrics["log_loss"] == pytest.approx(-(3 * np.log(0.8) + np.log(0.1)) / 4)


def test_confusion_tables_normalise_rows_and_keep_absent_classes():
    counts, shares = confusion_tables(np.array([0, 0, 0, 1]), np.array([0, 1, 1, 1]), CLASSES)
    assert counts.loc["ant"].tolist() == [1, 2, 0]
    assert shares.loc["ant"].tolist() == pytest.approx([1 / 3, 2 / 3, 0])
    assert shares.loc["cow"].tolist() == [0, 0, 0]  # never true: a zero row, not NaN
    assert counts.columns.tolist() == CLASSES


def test_calibration_known_answer():
    true = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.95, 0.05], [0.95, 0.05], [0.35, 0.65], [0.65, 0.35]])
    table = calibration_table(true, probabilities, bins=10)
    used = table[table["images"] > 0]
    assert used["images"].tolist() == [2, 2]
    assert used["accuracy"].tolist() == [0.5, 1.0]  # the 0.6-0.7 bin: one right, one wrong
    assert used["mean_confidence"].tolist() == pytest.approx([0.65, 0.95])
    assert expected_calibration_error(table) == pytest.approx((2 * 0.15 + 2 * 0.05) / 4)
    edge = calibration_table(np.array([0]), np.array([[1.0, 0.0]]), bins=4)
    assert edge["images"].tolist() == [0, 0, 0, 1]  # confidence 1 falls in the last bin


def test_top_k_is_reported_only_with_many_classes():
    rng = np.random.default_rng(0)
    few = rng.dirichlet(np.ones(3), size=20)
    assert not any(k.startswith("top_") for k in summary_metrics(np.arange(20) % 3, few, 3))
    many = rng.dirichlet(np.ones(8), size=40)
    true = np.arange(40) % 8
    metrics = summary_metrics(true, many, 8, top_k=3)
    ranks = (-many).argsort(axis=1)[:, :3]
    assert metrics["top_3_accuracy"] == pytest.approx(
        np.mean([t in r for t, r in zip(true, ranks, strict=True)])
    )


def test_abundance_extremes_and_confident_errors():
    abundance = abundance_table(np.array([0, 0, 1, 2]), np.array([1, 1, 1, 2]), CLASSES)
    extremes = abundance_extremes(abundance)
    assert [e["class"] for e in extremes["over_predicted"]] == ["bee"]
    assert [e["class"] for e in extremes["under_predicted"]] == ["ant"]
    table = predictions_table(
        pd.Series(["a", "b", "c", "d"]),
        np.array([0, 0, 1, 2]),
        np.array([[0.4, 0.6, 0], [0.1, 0.9, 0], [0, 1, 0], [0, 0, 1]]),
        CLASSES,
    )
    errors = confident_errors(table, count=5)
    assert errors["path"].tolist() == ["b", "a"]  # surest mistake first, correct ones left out


def test_confusion_text_is_the_whole_matrix_with_the_mistakes_listed():
    from pipeline.evaluation.metrics import confusion_text

    counts, _ = confusion_tables(
        np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 0]), CLASSES
    )
    text = confusion_text(counts, accuracy=0.5)
    assert text.splitlines()[0] == "Confusion matrix, test split: 6 images, accuracy 0.5000"
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()[4:8]}
    assert rows[CLASSES[2]] == ["2", "0", "1"] and rows[CLASSES[0]] == ["1", "1", "0"]
    assert text.splitlines()[-3:] == [
        "3 mistakes:",
        f"  2 x true {CLASSES[2]} predicted {CLASSES[0]}",
        f"  1 x true {CLASSES[0]} predicted {CLASSES[1]}",
    ]
    perfect, _ = confusion_tables(np.array([0, 1]), np.array([0, 1]), CLASSES)
    assert confusion_text(perfect, 1.0).endswith("0 mistakes\n")
    one, _ = confusion_tables(np.array([0, 1]), np.array([0, 0]), CLASSES)
    assert f"1 mistake:\n  1 x true {CLASSES[1]} predicted {CLASSES[0]}" in confusion_text(one, 0.5)


def test_the_score_without_label_suspects_and_who_the_model_sides_with():
    from pipeline.evaluation.metrics import suspect_effect

    predictions = pd.DataFrame(
        {
            "path": ["a", "b", "c", "d", "e"],
            "true_label": ["cat", "cat", "dog", "dog", "dog"],
            "predicted_label": ["cat", "dog", "dog", "cat", "cat"],
        }
    )
    suspects = pd.DataFrame(
        {"path": ["b", "c", "x"], "suggested_label": ["dog", "cat", "cat"]}  # x: not in test
    )
    assert suspect_effect(predictions, suspects) == {
        "test_suspects": 2,
        "mistakes_on_suspects": 1,  # b: the model says dog, as the audit does
        "suspects_predicted_as_given": 1,  # c
        "suspects_predicted_as_suggested": 1,  # b
        "accuracy_without_suspects": 1 / 3,  # a right; d, e wrong
    }
