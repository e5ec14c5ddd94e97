"""reporting.plots: every figure labels what it shows."""

import numpy as np
import pandas as pd

from pipeline.evaluation.metrics import abundance_table
from pipeline.reporting.plots import abundance_figure, confusion_figure

CLASSES = ["ant", "bee", "cow"]


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
    from pipeline.reporting.plots import history_figure

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


def test_near_duplicate_pairs_are_drawn_side_by_side_with_their_captions():
    from pipeline.reporting.plots import near_duplicate_figure

    small, large = np.zeros((8, 8), np.uint8), np.full((28, 28), 200, np.uint8)
    fig = near_duplicate_figure(
        {"Confirmed": [(small, large, "test/a.png r = 0.99")] * 5, "Rejected": []}
    )
    titles = [t.get_text() for t in fig.texts] + [s._suptitle.get_text() for s in fig.subfigs]
    assert "Confirmed" in titles and "Rejected" in titles
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 5 and drawn[0].get_title() == "test/a.png r = 0.99"
    pair = drawn[0].images[0].get_array()
    assert pair.shape[0] == 28 and pair.shape[1] > 2 * 24  # both images at about one height
    assert any(t.get_text() == "none" for ax in fig.axes for t in ax.texts)
