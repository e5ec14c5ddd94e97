"""A label fix is data: a row in data/relabels.csv re-runs the pipeline from the split (not
ingest), the audit's suspects reach evaluate, and the next model's MLflow run records which
version of the fixes it saw."""

import hashlib
import json

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.projects import run as _run

pytestmark = pytest.mark.slow


def test_the_audit_runs_and_evaluate_scores_without_its_suspects(project):
    root, _ = project
    audit = json.loads((root / "reports/audit/metrics.json").read_text())
    manifest = pd.read_csv(root / "data/split/manifest.csv", dtype=str, keep_default_na=False)
    assert audit["images"] == int((manifest["split"] != "").sum())
    assert audit["folds"] == 3
    assert (root / "reports/audit/review.html").read_text().count('class="suspect"') == min(
        audit["suspects"], 300
    )
    evaluate = json.loads((root / "reports/evaluate/metrics.json").read_text())
    assert evaluate["test_suspects"] == audit["suspects_per_split"].get("test", 0)
    # the duplicates the audit reports are the split's own groups, not judged again
    placed = manifest[manifest["split"] != ""]
    grouped = set(placed.loc[placed["group"] != "", "raw_path"])
    assert grouped, "the digits' split groups some near duplicates"
    issues = pd.read_csv(root / "reports/audit/image_issues.csv", keep_default_na=False)
    near = issues["issues"].str.split(";").map(lambda found: "near_duplicates" in found)
    assert set(issues.loc[near, "raw_path"]) == grouped
    assert audit["image_issues"]["near_duplicates"] == len(grouped)
    # the model trained from scratch answers with the mean over its test-time views (auto)
    labels = json.loads((root / "models/labels.json").read_text())
    assert labels["test_time_views"] == "shift"
    assert 0 <= evaluate["one_view_accuracy"] <= 1  # the network on one view, beside it


def test_a_relabel_commit_reruns_from_the_split_and_the_run_records_it(project, restore):
    root, env = project
    restore(
        root / "data",
        root / "dvc.lock",
        root / "models",
        root / "reports",
        root / "mlflow.db",
        root / "mlartifacts",
        root / ".dvc/cache",
    )
    manifest = pd.read_csv(root / "data/split/manifest.csv", dtype=str, keep_default_na=False)
    train = manifest[manifest["split"] == "train"]
    moved, dropped = train.iloc[0], train.iloc[1]
    new_label = "1" if moved["label"] != "1" else "2"
    fixes = root / "data/relabels.csv"
    fixes.write_text(
        "path,label,reason\n"
        f"{moved['raw_path']},{new_label},looked at it: a {new_label}\n"
        f"{dropped['raw_path']},drop,smudged\n"
    )
    output = _run(["dvc", "repro"], root, env)
    assert "Stage 'ingest' didn't change, skipping" in output
    for stage in ("split", "validate", "train", "audit", "evaluate"):
        assert f"Running stage '{stage}'" in output

    after = pd.read_csv(root / "data/split/manifest.csv", dtype=str, keep_default_na=False)
    after = after.set_index("raw_path")
    assert after.loc[moved["raw_path"], "label"] == new_label
    assert after.loc[moved["raw_path"], "relabelled_from"] == moved["label"]
    assert after.loc[moved["raw_path"], "split"] == "train"  # its split kept
    assert after.loc[dropped["raw_path"], "status"] == "excluded"
    assert (root / "data/raw" / moved["raw_path"]).exists()  # data/raw untouched

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    run_id = json.loads((root / "models/mlflow_run.json").read_text())["run_id"]
    tags = client.get_run(run_id).data.tags
    assert tags["data.relabels_sha256"] == hashlib.sha256(fixes.read_bytes()).hexdigest()
    assert (tags["data.relabelled"], tags["data.relabels_dropped"]) == ("1", "1")
    applied = client.download_artifacts(run_id, "lineage/relabels_applied.csv")
    assert set(pd.read_csv(applied)["raw_path"]) == {moved["raw_path"], dropped["raw_path"]}
