"""The validate stage as a gate: leaked near-duplicates stop `dvc repro` before training."""

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.projects import make_project

pytestmark = pytest.mark.slow


def leaky_folder(root: Path, given: bool = False) -> Path:
    """Three classes of real digit scans, each saved twice: as PNG and as JPEG. The two copies
    differ in bytes (so no content hash sees they are the same) but not to the eye. `given`:
    the PNGs under train/ and the JPEGs under test/, splits the source gives."""
    from PIL import Image

    from pipeline.imagedata.sources import digits_images

    pixels, labels = digits_images()
    for digit in (0, 1, 2):
        for index in [i for i, label in enumerate(labels) if label == digit][:20]:
            image = Image.fromarray(pixels[index]).resize((32, 32)).convert("RGB")
            for split, suffix, options in (("train", "png", {}), ("test", "jpg", {"quality": 95})):
                folder = root / (split if given else "") / f"digit {digit}"
                folder.mkdir(parents=True, exist_ok=True)
                image.save(folder / f"{index}.{suffix}", **options)
    return root


def repro(root: Path, env: dict, *stages: str) -> tuple[int, str]:
    result = subprocess.run(
        ["dvc", "repro", *stages], cwd=root, env=env, capture_output=True, text=True, timeout=900
    )
    return result.returncode, result.stdout + result.stderr


def test_our_split_keeps_near_duplicates_together_so_none_leaks(tmp_path):
    from tests.conftest import SHRUNK

    source = leaky_folder(tmp_path / "leaky")
    root = tmp_path / "project"
    root.mkdir()
    env = make_project(root, {**SHRUNK, "ingest": {"source": str(source)}})
    code, output = repro(root, env, "validate")
    assert code == 0, output
    manifest = pd.read_csv(root / "data/split/manifest.csv", dtype=str, keep_default_na=False)
    manifest["scan"] = manifest["raw_path"].str.rsplit(".", n=1).str[0]
    assert (manifest["group"] != "").all()  # every PNG grouped with its JPEG
    assert (manifest.groupby("scan")["split"].nunique() == 1).all()
    assert set(manifest["split"]) == {"train", "validation", "test"}
    report = json.loads((root / "reports/validate/validation.json").read_text())
    assert report["success"] is True and report["near_duplicates"] == 0


def test_leaks_across_given_splits_are_reported_or_stop_the_gate_by_param(tmp_path):
    from tests.conftest import SHRUNK

    source = leaky_folder(tmp_path / "leaky", given=True)
    root = tmp_path / "project"
    root.mkdir()
    env = make_project(root, {**SHRUNK, "ingest": {"source": str(source)}})
    code, output = repro(root, env, "validate")
    assert code == 0, output
    report = json.loads((root / "reports/validate/validation.json").read_text())
    manifest = pd.read_csv(root / "data/split/manifest.csv", dtype=str, keep_default_na=False)
    kept_in_train = (manifest["split"] == "train").sum()  # each has its JPEG copy in test/
    assert report["success"] is True and report["near_duplicates"] == kept_in_train > 30
    assert "near_duplicates.leak" in report["reported"]
    assert (root / "reports/validate/near_duplicates.png").exists()

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["validate"]["given_split_leaks"] = "error"
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    code, output = repro(root, env, "train")
    assert code != 0
    assert "failed to reproduce 'validate'" in output
    assert "near_duplicates.leak: expect_column_values_to_be_in_set" in output
    assert "nearest_train_path=train/digit " in output
    assert "Running stage 'train'" not in output
    assert not (root / "models" / "model.keras").exists()
    report = json.loads((root / "reports/validate/validation.json").read_text())
    assert report["success"] is False
    assert (root / "reports/validate/data_docs/index.html").exists()
