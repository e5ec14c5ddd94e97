"""The validate stage as a gate: leaked near-duplicates stop `dvc repro` before training."""

import json
import subprocess
from pathlib import Path

import pytest

from tests.projects import make_project

pytestmark = pytest.mark.slow


def leaky_folder(root: Path) -> Path:
    """Three classes of real digit scans, each saved twice: as PNG and as JPEG. The two copies
    differ in bytes (so the split cannot see they are the same) but not to the eye."""
    from PIL import Image

    from pipeline.imagedata.sources import digits_images

    pixels, labels = digits_images()
    for digit in (0, 1, 2):
        for index in [i for i, label in enumerate(labels) if label == digit][:20]:
            image = Image.fromarray(pixels[index]).resize((32, 32)).convert("RGB")
            folder = root / f"digit {digit}"
            folder.mkdir(parents=True, exist_ok=True)
            image.save(folder / f"{index}.png")
            image.save(folder / f"{index}.jpg", quality=95)
    return root


def test_repro_stops_at_validate_on_leaked_near_duplicates(tmp_path):
    from tests.conftest import SHRUNK

    source = leaky_folder(tmp_path / "leaky")
    root = tmp_path / "project"
    root.mkdir()
    env = make_project(root, {**SHRUNK, "ingest": {"source": str(source)}})
    result = subprocess.run(
        ["dvc", "repro"], cwd=root, env=env, capture_output=True, text=True, timeout=900
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "failed to reproduce 'validate'" in output
    assert "near_duplicates.confirmed: expect_column_values_to_be_in_set" in output
    assert "nearest_train_path=train/digit " in output
    assert "Running stage 'train'" not in output
    assert not (root / "models" / "model.keras").exists()
    report = json.loads((root / "reports/validate/validation.json").read_text())
    assert report["success"] is False
    assert report["near_duplicates"] > 0
    assert (root / "reports/validate/data_docs/index.html").exists()
