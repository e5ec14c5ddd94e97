"""A folder of colour photographs under the real `dvc repro`: stored at their working size
(upright, as JPEG), and trained from EfficientNet-Lite0's real ImageNet weights, which
`train.transfer.base: auto` chooses for them; predict then takes the same path."""

import io
import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_sample_image

from tests.projects import make_project
from tests.projects import run as _run

pytestmark = pytest.mark.slow

PHOTOGRAPHS = {"temple": "china.jpg", "flower": "flower.jpg"}  # scikit-learn's two photos


def photo_folder(folder, per_class: int = 12) -> None:
    """Crops of two real photographs, one class each: small JPEGs, and every fourth as a
    camera stores it (1600x1200, sideways, EXIF orientation 6)."""
    rng = np.random.default_rng(0)
    for label, name in PHOTOGRAPHS.items():
        photo = Image.fromarray(load_sample_image(name))
        (folder / label).mkdir(parents=True)
        for i in range(per_class):
            left, top = int(rng.integers(0, 340)), int(rng.integers(0, 200))
            crop = photo.crop((left, top, left + 300, top + 225))
            out = io.BytesIO()
            if i % 4 == 0:
                exif = Image.Exif()
                exif[0x0112] = 6
                crop.resize((1600, 1200)).save(out, format="JPEG", quality=90, exif=exif)
            else:
                crop.resize((160, 120)).save(out, format="JPEG", quality=90)
            (folder / label / f"{label}-{i:02d}.jpg").write_bytes(out.getvalue())


def test_photographs_are_stored_at_their_working_size_and_start_from_imagenet(tmp_path):
    source, root = tmp_path / "photos", tmp_path / "project"
    photo_folder(source)
    root.mkdir()
    env = make_project(root, {"ingest": {"source": str(source)}, "train": {"epochs": 3}})
    output = _run(["dvc", "repro", "train"], root, env, logs=True)
    assert "train.transfer.base auto -> efficientnet_lite0: colour images larger" in output

    manifest = pd.read_csv(root / "data/split/manifest.csv", dtype=str, keep_default_na=False)
    cameras = manifest[manifest["width"] == "1600"]
    assert len(cameras) == 6 and (cameras["height"] == "1200").all()  # the originals' size
    for row in cameras.itertuples():
        with Image.open(root / "data/split" / row.path) as image:
            assert (image.format, image.size) == ("JPEG", (384, 512))  # upright, working size
        assert row.path.endswith(".jpg") and "EXIF orientation 6 applied" in row.action
    small = manifest[manifest["width"] == "160"]
    assert (small["action"] == "linked").all()  # stored as they are

    run = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(
        json.loads((root / "models/mlflow_run.json").read_text())["run_id"]
    )
    assert run.data.params["train.transfer.base_resolved"] == "efficientnet_lite0"
    assert run.data.tags["transfer_base_choice"].startswith("train.transfer.base auto -> eff")
    assert run.data.params["input.image_size"] == "120"  # the photos' shorter side, up to 224

    predicted = _run(
        ["python", "-m", "pipeline.tools.predict", str(source), "--out", "p.csv"], root, env
    )
    assert "predict: 24 images classified" in predicted
    table = pd.read_csv(root / "p.csv")
    assert (table["error"].fillna("") == "").all() and len(table) == 24
