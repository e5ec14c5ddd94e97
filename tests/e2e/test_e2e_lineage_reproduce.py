"""A run's lineage (commit, data version, environment) and `make reproduce`, which trains it
again from that lineage alone and must match its metrics exactly."""

import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.tools.reproduce import side_by_side
from pipeline.tracking.records import RecordedRun
from tests.e2e.conftest import edited_params
from tests.projects import run as _run

pytestmark = pytest.mark.slow


def test_a_run_carries_its_lineage_and_make_reproduce_matches_it_exactly(project, restore):
    root, env = project
    # the reproduction's run, model version, artifacts and cached outputs go into the shared
    # project's store and cache (and a git worktree of its repository, removed again)
    restore(root / "mlflow.db", root / "mlartifacts", root / ".dvc/cache", root / ".git/worktrees")
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    [experiment] = [e for e in client.search_experiments() if e.name != "Default"]
    [original] = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if r.info.run_name.startswith("train ")
    ]
    tags = original.data.tags
    commit = _run(["git", "rev-parse", "HEAD"], root, env).strip()
    assert tags["git.commit"] == commit
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    [raw] = [o for o in lock["ingest"]["outs"] if o["path"] == "data/raw"]
    assert tags["data.raw_dvc_md5"] == raw["md5"] and raw["md5"].endswith(".dir")
    assert tags["dvc.stage.split"].startswith("data/split=")
    assert {"env.tensorflow", "env.keras", "env.dvc", "env.mlflow", "env.python"} <= tags.keys()
    [dataset] = original.inputs.dataset_inputs
    assert {t.key: t.value for t in dataset.tags}["raw_dvc_md5"] == raw["md5"]
    lineage = {a.path for a in client.list_artifacts(original.info.run_id, "lineage")}
    assert "lineage/dvc.lock" in lineage

    assert "dvc.stage.train" not in tags  # the lock's train entry is the previous run's
    # a changed workspace does not matter: the run's own params are restored
    with edited_params(root, {"train": {"epochs": 1}}):  # put back: other tests read it
        output = _run(
            [sys.executable, "-m", "pipeline.tools.reproduce", original.info.run_id], root, env
        )
    assert "all " in output and "metrics match the original run exactly" in output
    [again] = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if r.data.tags.get("reproduces") == original.info.run_id
    ]
    # the tool's own verdicts, from what MLflow stored: timings and the registry apart, every
    # metric the same (export sizes within the tool's tolerance), none missing on either side
    table = side_by_side(
        *(RecordedRun(r.info.run_id, "", "", "", r.data.metrics, {}, {}) for r in (original, again))
    )
    assert not table["verdict"].isin(["differs", "missing"]).any(), table.to_string()
    assert again.data.params == original.data.params
    assert again.data.tags["data.raw_dvc_md5"] == raw["md5"]
