import numpy as np
import pandas as pd
import pytest

from pipeline.evaluate import abundance_table, per_class_table, predictions_table, summary_metrics
from pipeline.plots import abundance_figure, confusion_figure

CLASSES = ["ant", "bee", "cow"]


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


def test_figures_label_every_class():
    matrix = np.array([[2, 0, 0], [0, 1, 1], [0, 0, 0]])
    fig = confusion_figure(matrix, CLASSES)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASSES
    assert sorted(t.get_text() for t in ax.texts) == ["1", "1", "2"]
    bars = abundance_figure(abundance_table(np.array([0, 1]), np.array([0, 0]), CLASSES))
    assert [t.get_text() for t in bars.axes[0].get_legend().get_texts()] == [
        "observed (true)",
        "predicted",
    ]


def test_history_figure_marks_the_kept_epoch():
    from pipeline.plots import history_figure

    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "loss": [1.0, 0.5, 0.4],
            "val_loss": [1.1, 0.6, 0.7],
            "accuracy": [0.5, 0.8, 0.9],
            "val_accuracy": [0.4, 0.7, 0.65],
        }
    )
    fig = history_figure(history, best_epoch=2)
    assert [ax.get_title() for ax in fig.axes] == ["Loss", "Accuracy"]
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["train", "validation", "kept epoch 2"]
