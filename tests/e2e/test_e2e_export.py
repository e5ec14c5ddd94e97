"""Stage `export` and stage `card` in the real pipeline: the exports with their parity table
in the model's run, a planted mismatch stopping the stage, the CLI on each export, the card."""

import subprocess
import sys

import pandas as pd
import pytest

from pipeline.serving.formats import FILES, FLOAT_FORMATS

pytestmark = pytest.mark.slow

# the real stage, with ONNX Runtime's answer for the first image of every batch moved to the
# next class: a converter that got one image wrong
PLANTED = """
import numpy as np
import pipeline.evaluation.parity as parity
import pipeline.export as stage
from pipeline.common.log import run_stage

real = parity.load_exported

class Planted:
    def __init__(self, runtime):
        self.runtime = runtime

    def predict_on_batch(self, images):
        probabilities = np.array(self.runtime.predict_on_batch(images))
        probabilities[0] = np.roll(probabilities[0], 1)
        return probabilities

parity.load_exported = lambda path: Planted(real(path)) if path.suffix == ".onnx" else real(path)
run_stage("export", stage.main)
"""


def test_every_format_is_exported_checked_and_in_the_model_s_run(project):
    from mlflow.tracking import MlflowClient

    root, env = project
    parity = pd.read_csv(root / "reports/export/parity.csv")
    assert set(FILES) <= set(parity["format"]) and "keras" in set(parity["format"])
    floats = parity[parity["format"].isin(FLOAT_FORMATS)]
    assert (floats["disagreements"] == 0).all() and (
        floats["max_probability_difference"] < 1e-4
    ).all()
    assert (parity["images_per_second"] > 0).all() and (parity["size_bytes"] > 0).all()
    for name in [*FILES.values(), "labels.json", "signature.json"]:
        assert (root / "models/export" / name).exists(), name

    run_id = pd.read_json(root / "models/mlflow_run.json", typ="series")["run_id"]
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    run = client.get_run(run_id)
    assert run.data.metrics["export_onnx_agreement"] == 1.0
    assert (
        run.data.tags["export.status"] == "finished" and run.data.tags["card.status"] == "finished"
    )
    artifacts = {a.path for a in client.list_artifacts(run_id, "export")}
    assert {"export/model.onnx", "export/model.tflite", "export/saved_model"} <= artifacts
    card = (root / "models/model_card.md").read_text()
    assert "## Exports and their parity with Keras" in card and "| onnx " in card
    assert run.data.tags["mlflow.note.content"].startswith("# Model card: image-classifier-digits")


def test_a_planted_mismatch_stops_the_stage_naming_the_format_and_images(project, restore):
    root, env = project
    restore(
        root / "models/export", root / "reports/export", root / "mlflow.db", root / "mlartifacts"
    )
    result = subprocess.run(
        [sys.executable, "-c", PLANTED],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "export: error: the exports do not answer as the Keras model does:" in result.stderr
    assert "onnx predicts another class than Keras for" in result.stderr
    assert "first images that differ:" in result.stderr and "test/" in result.stderr
    parity = pd.read_csv(root / "reports/export/parity.csv").set_index("format")
    assert parity.loc["onnx", "disagreements"] >= 1  # the table is written before it stops
    assert parity.loc["tflite", "disagreements"] == 0


def test_predict_runs_each_export_in_its_runtime_with_the_same_answers(project, tmp_path):
    root, env = project
    answers = {}
    for fmt in ["keras", "onnx", "tflite_int8"]:  # the others: tests/serving/test_formats.py
        out = tmp_path / f"{fmt}.csv"
        printed = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline.tools.predict",
                "data/split/test",
                "--format",
                fmt,
                "--out",
                str(out),
            ],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "images classified" in printed
        answers[fmt] = pd.read_csv(out)
    expected = pd.read_csv(root / "reports/evaluate/predictions.csv")
    parity = pd.read_csv(root / "reports/export/parity.csv").set_index("format")
    reference = answers["onnx"]["predicted"].astype(str).to_numpy()
    for fmt, table in answers.items():  # the files of the test split, all read
        assert len(table) == len(expected) and table["error"].isna().all(), fmt
        agreement = (table["predicted"].astype(str).to_numpy() == reference).mean()
        # as the stage measured it (keras: the .keras file as trained)
        row = "keras_as_trained" if fmt == "keras" and "keras_as_trained" in parity.index else fmt
        assert agreement == pytest.approx(parity.loc[row, "agreement"], abs=0.01), fmt
