"""tracking.records: a recorded run read back, its artifacts, and the experiment's table."""

from collections.abc import Iterator

import mlflow
import pytest

from pipeline.tracking import records, store


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> Iterator[str]:
    """One run in a store of its own (a store takes seconds to create: one for the module)."""
    folder = tmp_path_factory.mktemp("records")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        patch.setenv("MLFLOW_EXPERIMENT_NAME", "records-test")
        patch.setattr(store, "MLFLOW_ARTIFACTS", folder / "artifacts")
        with store.tracked_run(store.configure(), run_name="sweep-1") as run:
            mlflow.log_params({"train.epochs": 3})
            mlflow.log_metric("test_accuracy", 0.9)
            mlflow.set_tag("git.commit", "abc")
            mlflow.log_text("base:\n  seed: 1\n", "params.yaml")
        yield run.info.run_id


def test_a_run_reads_back_whole(logged, tmp_path):
    run = records.recorded_run(logged)
    assert (run.name, run.experiment) == ("sweep-1", "records-test")
    assert run.metrics == {"test_accuracy": 0.9} and run.params == {"train.epochs": "3"}
    assert run.tags["git.commit"] == "abc"
    (tmp_path / "scratch").mkdir()
    records.copy_params(logged, tmp_path / "params.yaml", tmp_path / "scratch")
    assert (tmp_path / "params.yaml").read_text() == "base:\n  seed: 1\n"


def test_unknown_runs_and_artifacts_are_named(logged, tmp_path):
    with pytest.raises(records.RunNotFoundError, match="no run 'nope' in the tracking store"):
        records.recorded_run("nope")
    with pytest.raises(records.RunNotFoundError, match=f"run {logged} has no lineage artifact"):
        records.download_artifact(logged, "lineage", tmp_path)


def test_runs_are_found_by_name_prefix(logged):
    experiment, runs = records.search_runs("sweep", include_unfinished=False, last=10)
    assert experiment == "records-test" and runs["run_id"].tolist() == [logged]
    assert records.search_runs("other", include_unfinished=True, last=10)[1].empty
