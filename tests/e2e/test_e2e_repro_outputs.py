"""The whole pipeline through the real `dvc repro`: every declared output, DVC's views of the
metrics and plots, and the HTML pages that must load nothing from the network."""

import json

import pytest

from pipeline.paths import DVC_PLOTS_TEMPLATE, WEB_ASSETS_DIR
from pipeline.reporting.web_assets import VEGA, external_loads
from tests.e2e.conftest import declared_outputs
from tests.projects import run as _run

pytestmark = pytest.mark.slow


def test_repro_writes_every_declared_output(project):
    root, _ = project
    declared = declared_outputs(root / "dvc.yaml")
    missing = [path for path in declared if not (root / path).exists()]
    assert missing == []
    empty = [
        path for path in declared if (root / path).is_dir() and not any((root / path).iterdir())
    ]
    assert empty == []
    assert len(list((root / "data/raw").glob("*/*.png"))) == 1797
    assert len(list((root / "reports/visualize/pictures/feature_maps").glob("*.png"))) == 10
    manifest = (root / "data/split/manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 1797


def test_data_docs_load_nothing_from_the_network(project):
    if not (WEB_ASSETS_DIR / VEGA.folder / ".complete").exists():
        pytest.skip("front-end packages not fetched: `make setup` needs npm")
    root, _ = project
    pages = list((root / "reports/validate/data_docs").rglob("*.html"))
    assert len(pages) >= 20  # the index, ten suites, ten validation results
    assert {
        page.name: external_loads(page.read_text())
        for page in pages
        if external_loads(page.read_text())
    } == {}


def test_dvc_metrics_show_prints_test_accuracy(project):
    root, env = project
    shown = json.loads(_run(["dvc", "metrics", "show", "--json"], root, env))
    metrics = shown[""]["data"]["reports/evaluate/metrics.json"]["data"]
    assert 0 <= metrics["accuracy"] <= 1
    assert metrics == json.loads((root / "reports/evaluate/metrics.json").read_text())


def test_dvc_plots_render(project, restore):
    root, env = project
    restore(root / "plots")  # the rendered pages are not the project's
    _run(["dvc", "plots", "show", "-o", "plots"], root, env)
    page = (root / "plots/index.html").read_text()
    for title in ("Loss per epoch", "Accuracy per epoch", "Confusion matrix (test)"):
        assert title in page


def test_dvc_plots_render_offline_with_the_setup_template(project, restore):
    if not DVC_PLOTS_TEMPLATE.exists():
        pytest.skip("no offline template: `make setup` needs npm to build it")
    root, env = project
    restore(root / "offline")
    template = str(DVC_PLOTS_TEMPLATE)
    _run(["dvc", "plots", "show", "-o", "offline", "--html-template", template], root, env)
    page = (root / "offline/index.html").read_text()
    assert "vegaEmbed('#Loss_per_epoch'" in page
    assert "https://cdn" not in page


def test_evaluation_report_is_self_contained(project):
    root, _ = project
    page = (root / "reports/evaluate/report.html").read_text()
    assert external_loads(page) == []
    assert page.count("data:image/png;base64,") == 5  # history, confusion, abundance, ...
    table = json.loads((root / "reports/evaluate/confusion_matrix.json").read_text())
    assert table["classes"] == [str(d) for d in range(10)]
    assert (
        sum(map(sum, table["counts"]))
        == json.loads((root / "reports/evaluate/metrics.json").read_text())["n_images"]
    )
