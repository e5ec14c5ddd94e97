"""Lineage tags: which `dvc.lock` entries describe the data a model was trained on."""

import pytest
import yaml

from pipeline.paths import ROOT
from pipeline.tracking import lineage


def _lock(tmp_path, stages):
    path = tmp_path / "dvc.lock"
    outs = {
        name: {"outs": [{"path": path_, "md5": md5} for path_, md5 in outs]}
        for name, outs in stages.items()
    }
    path.write_text(yaml.safe_dump({"schema": "2.0", "stages": outs}))
    return path


def test_upstream_stages_of_train_in_the_project_pipeline():
    assert lineage.upstream_stages("train") == ["source", "ingest", "split", "validate"]
    assert lineage.upstream_stages("source") == []
    assert set(lineage.upstream_stages("evaluate")) >= {"ingest", "split", "validate", "train"}


def test_upstream_follows_dependencies_through_other_stages_and_folders(tmp_path):
    spec = tmp_path / "dvc.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "a": {"cmd": "x", "outs": ["data/a"]},
                    "b": {"cmd": "x", "deps": ["data/a/part.csv"], "outs": [{"data/b": {}}]},
                    "side": {"cmd": "x", "outs": ["data/side"]},
                    "c": {"cmd": "x", "deps": ["data/b", "code.py"], "outs": ["c.json"]},
                }
            },
            sort_keys=False,
        )
    )
    assert lineage.upstream_stages("c", spec) == ["a", "b"]
    with pytest.raises(KeyError, match=r"no stage 'missing'.*a, b, side, c"):
        lineage.upstream_stages("missing", spec)


def test_stage_hashes_leave_out_the_stage_itself_and_later_stages(tmp_path):
    lock = _lock(
        tmp_path,
        {
            "ingest": [("data/raw", "r.dir")],
            "split": [("data/split", "s.dir")],
            "validate": [("reports/validate/validation.json", "v1"), ("reports/x", "v2")],
            "train": [("models/model.keras", "from-the-previous-run")],
            "evaluate": [("reports/evaluate/metrics.json", "from-the-previous-run")],
        },
    )
    tags = lineage.dvc_stage_hashes("train", lock, ROOT / "dvc.yaml")
    assert tags == {
        "dvc.stage.ingest": "data/raw=r.dir",
        "dvc.stage.split": "data/split=s.dir",
        "dvc.stage.validate": "reports/validate/validation.json=v1 reports/x=v2",
    }


def test_stage_hashes_without_a_lock_or_a_stage_not_yet_locked(tmp_path):
    assert lineage.dvc_stage_hashes("train", tmp_path / "dvc.lock", ROOT / "dvc.yaml") == {}
    lock = _lock(tmp_path, {"ingest": [("data/raw", "r.dir")]})
    assert lineage.dvc_stage_hashes("train", lock, ROOT / "dvc.yaml") == {
        "dvc.stage.ingest": "data/raw=r.dir"
    }
