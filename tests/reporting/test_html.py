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


def test_the_review_page_shows_each_suspect_with_the_row_that_fixes_it(tmp_path):
    from pipeline.curation.label_issues import relabel_line
    from pipeline.reporting.html import review_report
    from pipeline.reporting.web_assets import external_loads

    for name in ("a", "b"):
        (tmp_path / "train/cat").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), 200, np.uint8)).save(tmp_path / f"train/cat/{name}.png")
    reason = "audit: p(dog)=0.97, p(given)=0.01"
    suspects = pd.DataFrame(
        {
            "rank": [1, 2],
            "raw_path": ["cat/a.png", "cat/b.png"],
            "path": ["train/cat/a.png", "train/cat/b.png"],
            "split": ["train", "train"],
            "given_label": ["cat", "cat"],
            "relabelled_from": ["", "owl"],
            "suggested_label": ["dog", "owl"],
            "p_given": [0.01, 0.2],
            "p_suggested": [0.97, 0.7],
            "label_quality": [0.01, 0.2],
            "reason": [reason, "x"],
        }
    )
    suspects["relabel"] = [relabel_line("cat/a.png", "dog", reason), "cat/b.png,owl,x"]
    metrics = {
        "images": 10,
        "suspects": 2,
        "suspect_share": 0.2,
        "cross_fit_accuracy": 0.9,
        "cross_fit_seconds": 3.0,
        "folds": 5,
        "filter_by": "f",
        "rank_by": "r",
    }
    counts = pd.DataFrame({"class": ["cat", "(all)"], "images": [2, 2], "dark": [0, 0]})
    page = review_report(
        dataset="pets",
        metrics=metrics,
        suspects=suspects,
        pairs=pd.DataFrame({"given_label": ["cat"], "suggested_label": ["dog"], "suspects": [1]}),
        checks=counts,
        conflicts=pd.DataFrame(),
        left_out=pd.DataFrame(),
        root=tmp_path,
    )
    assert page.count('<img src="data:image/png;base64,') == 2  # self-contained
    assert external_loads(page) == []
    assert page.count('class="suspect"') == 2
    assert 'data-path="cat/a.png" data-suggested="dog"' in page
    assert f'data-reason="{reason}"' in page
    assert "given <b>cat</b>, looks like <b>dog</b>" in page
    assert "echo 'cat/a.png,dog,&#34;audit: p(dog)=0.97, p(given)=0.01&#34;'" in page
    assert "<h2>Image checks</h2>" in page
    assert page.count("data/relabels.csv moved it from") == 1
