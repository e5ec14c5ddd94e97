import json
import re

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.evaluate import (
    ModelMismatchError,
    abundance_extremes,
    abundance_table,
    calibration_table,
    confident_errors,
    confusion_tables,
    expected_calibration_error,
    load_checked_model,
    metric_key,
    per_class_table,
    predict_rows,
    predictions_table,
    summary_metrics,
)
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


def _brightness_model(levels: list[int]) -> keras.Model:
    """A model whose answer is known: the class whose grey level is nearest the image's mean
    (logit_k = 2 c_k x - c_k^2 ranks classes as -(x - c_k)^2 does)."""
    centres = np.array(levels, dtype=np.float32) / 255
    inputs = keras.Input((8, 8, 1), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(len(levels), activation="softmax")
    outputs = dense(x)
    dense.set_weights([40 * 2 * centres[None, :], -40 * centres**2])
    return keras.Model(inputs, outputs)


def test_predictions_follow_the_file_order_through_the_real_dataset(tmp_path):
    """Known answers, files of the three classes interleaved and more of them than one batch:
    any shuffle or batch misalignment would put a prediction beside the wrong file."""
    levels = {"dark": 20, "mid": 128, "light": 235}
    rows = []
    for n in range(23):
        name = list(levels)[(n * 7) % 3]
        path = f"test/{name}/{n:02d}.png"
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), levels[name], np.uint8)).save(tmp_path / path)
        rows.append({"path": path, "label": name})
    rows = pd.DataFrame(rows)
    classes = ["light", "dark", "mid"]  # the labels file's order, not alphabetical
    model = _brightness_model([levels[c] for c in classes])
    probabilities = predict_rows(model, rows, classes, 8, 1, batch_size=5, root=tmp_path)
    true = np.array([classes.index(c) for c in rows["label"]])
    table = predictions_table(rows["path"], true, probabilities, classes)
    assert (table["predicted_label"] == rows["label"]).all()
    assert (table["true_label"] == rows["label"]).all()
    assert table["path"].tolist() == rows["path"].tolist()


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


def test_metric_keys_are_valid_mlflow_names():
    assert metric_key("Golden Retriever/2") == "Golden Retriever/2"
    assert metric_key("crème:brûlée") == "cr_me_br_l_e"


def _saved_model(tmp_path, classes: list[str], outputs: int | None = None):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), dtype="uint8"),
            keras.layers.Flatten(),
            keras.layers.Dense(outputs or len(classes)),
        ]
    )
    model_file = tmp_path / "model.keras"
    model.save(model_file)
    labels = tmp_path / "model_labels.json"
    labels.write_text(json.dumps({"classes": classes}))
    return model_file, labels


def test_a_model_of_other_classes_is_refused_before_predicting(tmp_path):
    model_file, labels = _saved_model(tmp_path, ["ant", "bee", "owl"])
    with pytest.raises(ModelMismatchError, match=r"does not know: \['cow'\].*lacks: \['owl'\]"):
        load_checked_model(model_file, labels, CLASSES)
    model_file, labels = _saved_model(tmp_path, ["bee", "ant", "cow"])
    with pytest.raises(ModelMismatchError, match="another order"):
        load_checked_model(model_file, labels, CLASSES)
    model_file, labels = _saved_model(tmp_path, CLASSES, outputs=4)
    with pytest.raises(ModelMismatchError, match="has 4 outputs"):
        load_checked_model(model_file, labels, CLASSES)
    model_file, labels = _saved_model(tmp_path, CLASSES)
    assert load_checked_model(model_file, labels, CLASSES).output_shape == (None, 3)


def test_a_missing_or_corrupt_model_file_is_named(tmp_path):
    model_file, labels = _saved_model(tmp_path, CLASSES)
    with pytest.raises(ModelMismatchError, match=r"model file .*absent\.keras is missing"):
        load_checked_model(tmp_path / "absent.keras", labels, CLASSES)
    with pytest.raises(ModelMismatchError, match=r"model_labels\.json.* is missing"):
        load_checked_model(model_file, tmp_path / "model_labels.json.gone", CLASSES)
    model_file.write_bytes(model_file.read_bytes()[:200])  # truncated, as by a full disk
    with pytest.raises(ModelMismatchError, match=r"model\.keras cannot be loaded.*corrupt"):
        load_checked_model(model_file, labels, CLASSES)


def test_html_report_is_self_contained(tmp_path):
    from pipeline.html_report import evaluation_report

    true = np.array([0, 1, 2, 2])
    probabilities = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.7, 0.2, 0.1]])
    predicted = probabilities.argmax(axis=1)
    metrics = summary_metrics(true, probabilities, 3) | {"baseline_svc_accuracy": 0.5}
    table = predictions_table(pd.Series(list("abcd")), true, probabilities, CLASSES)
    picture = tmp_path / "x.png"
    Image.new("RGB", (4, 4)).save(picture)
    abundance = abundance_table(true, predicted, CLASSES)
    html = evaluation_report(
        metrics=metrics,
        per_class=per_class_table(true, predicted, CLASSES),
        extremes=abundance_extremes(abundance),
        calibration=calibration_table(true, probabilities, 5),
        errors=confident_errors(table, 3),
        pictures={
            **dict.fromkeys(["confusion", "abundance", "reliability", "gallery"], picture),
            "history": tmp_path / "absent.png",
        },
        run_id="abc123",
        model_file="models/model.keras",
        top_k=3,
        confusion=confusion_tables(true, predicted, CLASSES)[0],
        mistakes=1,
    )
    assert "data:image/png;base64," in html
    assert "absent.png" not in html and "<h2>Training</h2>" not in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<script" not in html
    assert "macro average" in html and "abc123" in html and "75.00%" in html
    assert all(name in html for name in CLASSES)


def test_confusion_text_is_the_whole_matrix_with_the_mistakes_listed():
    from pipeline.evaluate import confusion_text

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
