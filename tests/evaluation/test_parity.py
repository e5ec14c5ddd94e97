"""The parity table's rows and the rules the export stage enforces on them."""

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluation.parity import (
    COLUMNS,
    disagreeing,
    parity_failures,
    parity_row,
    timed_predictions,
)

REFERENCE = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
TRUE = np.array([0, 1, 1, 1])  # the reference gets 3 of 4


def table(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=COLUMNS)


def test_a_row_counts_agreement_gap_and_accuracy_against_the_reference():
    exported = REFERENCE.copy()
    exported[2] = [0.4, 0.6]  # flips image 2, to its true class
    row = parity_row("onnx", exported, REFERENCE, TRUE, 1000, 50.0)
    assert row["agreement"] == 0.75 and row["disagreements"] == 1
    assert row["max_probability_difference"] == pytest.approx(0.2)
    assert row["accuracy"] == 1.0 and row["accuracy_change"] == pytest.approx(0.25)
    assert list(row) == COLUMNS


def test_a_planted_mismatch_in_a_float_format_fails_naming_it():
    same = parity_row("tflite", REFERENCE + 1e-7, REFERENCE, TRUE, 1, 1.0)
    flipped = REFERENCE.copy()
    flipped[0] = [0.4, 0.6]
    wrong = parity_row("onnx", flipped, REFERENCE, TRUE, 1, 1.0)
    failures = parity_failures(table(same, wrong), ("onnx", "tflite"), 1e-4, 0.005)
    assert (
        failures[0]
        == "onnx predicts another class than Keras for 1 of the test images (agreement 0.7500)"
    )
    assert "onnx's probabilities differ from Keras' by up to 0.5" in failures[1]
    assert len(failures) == 2


def test_a_float_format_off_in_probabilities_alone_fails_too():
    off = parity_row("saved_model", REFERENCE + 1e-3, REFERENCE, TRUE, 1, 1.0)
    (failure,) = parity_failures(table(off), ("saved_model",), 1e-4, 0.005)
    assert "export.max_probability_difference = 0.0001" in failure


def test_int8_may_lose_up_to_the_allowed_accuracy_and_no_more():
    worse = REFERENCE.copy()
    worse[1] = [0.6, 0.4]  # one of four more wrong: 25 points
    row = parity_row("tflite_int8", worse, REFERENCE, TRUE, 1, 1.0)
    assert parity_failures(table(row), ("onnx",), 1e-4, 0.30) == []
    (failure,) = parity_failures(table(row), ("onnx",), 1e-4, 0.005)
    assert failure.startswith("tflite_int8 loses 25.00% of test accuracy (0.5000;")


def test_disagreeing_names_the_files():
    flipped = REFERENCE.copy()
    flipped[3] = [0.9, 0.1]
    found = disagreeing(
        pd.Series(["a.png", "b.png", "c.png", "d.png"]), flipped, REFERENCE, ["x", "y"]
    )
    assert found.to_dict("records") == [{"path": "d.png", "keras": "y", "exported": "x"}]


def test_timed_predictions_keep_the_order_and_pad_the_last_batch():
    seen = []

    def predict(batch: np.ndarray) -> np.ndarray:
        seen.append(len(batch))
        return np.stack([batch.reshape(len(batch), -1).sum(axis=1), np.zeros(len(batch))], axis=1)

    images = np.arange(7, dtype=np.uint8).reshape(7, 1, 1, 1)
    probabilities, speed = timed_predictions(predict, images, 3)
    assert probabilities[:, 0].tolist() == list(range(7))
    assert set(seen) == {3} and speed > 0  # warm-up and every batch, padded, of one size


def test_check_parity_stops_naming_the_rule_the_images_and_the_table():
    from pipeline.evaluation.parity import ParityError, Tolerance, check_parity

    flipped = REFERENCE.copy()
    flipped[1] = [0.7, 0.3]
    rows = table(
        parity_row("keras", REFERENCE, REFERENCE, TRUE, 1, 1.0),
        parity_row("onnx", flipped, REFERENCE, TRUE, 1, 1.0),
    )
    paths = pd.Series(["a.png", "b.png", "c.png", "d.png"])
    found = {"keras": REFERENCE, "onnx": flipped}
    with pytest.raises(ParityError) as error:
        check_parity(
            rows, found, paths, ["x", "y"], Tolerance(1e-4, 0.005), "reports/export/parity.csv"
        )
    message = str(error.value)
    assert message.startswith("the exports do not answer as the Keras model does:\n  onnx ")
    assert "b.png     y        x   onnx" in message
    assert message.endswith("(table: reports/export/parity.csv)")
    check_parity(
        rows.iloc[:1], {"keras": REFERENCE}, paths, ["x", "y"], Tolerance(1e-4, 0.005), "t.csv"
    )
