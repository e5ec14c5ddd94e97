"""reporting.html: the evaluation page is one self-contained file."""

import re

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.evaluation.metrics import (
    abundance_extremes,
    abundance_table,
    calibration_table,
    confident_errors,
    confusion_tables,
    per_class_table,
    predictions_table,
    summary_metrics,
)

CLASSES = ["ant", "bee", "cow"]


def test_html_report_is_self_contained(tmp_path):
    from pipeline.reporting.html import evaluation_report

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
