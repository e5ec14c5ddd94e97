"""tools.summary: the closing lines of `make run`, or what to run first."""

import pytest

from pipeline.common.log import PipelineError
from pipeline.tools import summary


def test_before_a_run_it_says_to_run_the_pipeline(tmp_path, monkeypatch):
    monkeypatch.setattr(summary, "METRICS_FILE", tmp_path / "reports/evaluate/metrics.json")
    monkeypatch.setattr(summary, "ROOT", tmp_path)
    with pytest.raises(PipelineError, match=r"reports/evaluate/metrics\.json is missing: run"):
        summary.summary()
