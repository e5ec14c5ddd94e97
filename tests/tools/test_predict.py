"""`python -m pipeline.tools.predict`: new images seen exactly as the split and training saw
theirs."""

import json
import re

import keras
import numpy as np
import pandas as pd
import pytest

from pipeline.imagedata import manifest as mf
from pipeline.imagedata.assignment import SplitSetup, build_split, write_split
from pipeline.imagedata.dataset import decode_image
from pipeline.imagedata.images import Rules, UnreadableImageError, model_ready
from pipeline.params import ModelParams
from pipeline.serving.inference import Classifier, ModelNotFoundError
from pipeline.tools.predict import InputNotFoundError, image_files, main, predict_files
from pipeline.training.model import build_model
from tests.imagedata.test_assignment import WHITE, split_params
from tests.messy_folder import build_messy_folder

CLASSES = ["Cat Photos", "dog", "Müsli"]
RULES = Rules.of(split_params())  # the split's, which predict stores new images by


@pytest.fixture(scope="module")
def messy_split(tmp_path_factory):
    """The messy folder (every kind of bad and odd file) and the split written from it."""
    base = tmp_path_factory.mktemp("messy")
    root = base / "raw"
    cases = build_messy_folder(root)
    cfg = split_params(small_classes="drop", max_rejected_fraction=0.5, background=WHITE)
    working = base / "working"  # the working-size copies, as the stage makes them
    working.mkdir()
    table = build_split(root, SplitSetup(cfg, 0, 3), previous={}, working=working)
    write_split(table, root, base / "split", SplitSetup(cfg, 0, 3), working=working)
    return root, cases, mf.read_manifest(base / "split" / "manifest.csv"), base / "split"


@pytest.fixture(scope="module")
def classifier(raw_params_module) -> Classifier:
    small = {"filters": [4], "convs_per_block": 1, "dense_units": [8]}
    cfg = ModelParams(**{**raw_params_module["train"]["model"], **small})
    keras.utils.set_random_seed(0)
    return Classifier(build_model((16, 16, 3), len(CLASSES), cfg), CLASSES, WHITE)


@pytest.fixture(scope="module")
def raw_params_module():
    from pipeline.params import load_raw_params

    return load_raw_params()


def test_model_ready_gives_the_bytes_the_split_wrote_for_every_placed_file(messy_split):
    root, _, manifest, split_dir = messy_split
    placed = manifest[manifest["status"] == mf.OK]
    assert len(placed) > 30
    converted = 0
    for row in placed.itertuples():
        ready, actions = model_ready((root / row.raw_path).read_bytes(), 3, RULES)
        assert ready == (split_dir / row.path).read_bytes(), row.raw_path
        converted += bool(actions)
    assert converted >= 8  # CMYK, transparency, 16-bit, EXIF, palette, WebP, TIFF, gray ...


def test_model_ready_refuses_what_the_split_rejects_with_its_reason(messy_split):
    root, cases, manifest, _ = messy_split
    for case in ("text", "empty", "truncated", "corrupt_jpeg"):
        reason = manifest.loc[manifest["raw_path"] == cases[case], "reason"].item()
        with pytest.raises(UnreadableImageError) as error:
            model_ready((root / cases[case]).read_bytes(), 3, RULES)
        assert str(error.value) == reason


def test_new_files_are_predicted_as_their_split_copies_are_by_the_training_decoder(
    messy_split, classifier
):
    root, _, manifest, split_dir = messy_split
    placed = manifest[manifest["status"] == mf.OK]
    table = predict_files(classifier, [root / p for p in placed["raw_path"]], batch_size=7)
    assert (table["error"] == "").all() and len(table) == len(placed)
    decoded = np.stack([decode_image(str(split_dir / p), 16, 3).numpy() for p in placed["path"]])
    expected = classifier.model.predict_on_batch(decoded)
    got = table[[f"top_{k}_probability" for k in (1, 2, 3)]].to_numpy()
    assert np.allclose(np.sort(expected, axis=1)[:, ::-1], got, atol=1e-6)
    assert table["predicted"].tolist() == [CLASSES[i] for i in expected.argmax(axis=1)]


def test_unreadable_files_get_their_reason_and_the_batch_goes_on(messy_split, classifier):
    root, cases, _, _ = messy_split
    files = list(image_files([root / "dog"]))
    table = predict_files(classifier, files, batch_size=4, top_k=2)
    assert table["path"].tolist() == [str(f) for f in files]  # every file, in order
    errors = dict(zip(table["path"], table["error"], strict=True))
    assert errors[str(root / cases["text"])] == "not an image (no known image format)"
    assert errors[str(root / cases["empty"])] == "empty file"
    assert errors[str(root / cases["truncated"])].startswith("corrupt or truncated image")
    assert errors[str(root / cases["rgba_transparent"])] == ""
    # read without blocking: the named pipe is never opened
    pipe, link = str(root / cases["named_pipe"]), str(root / cases["broken_link"])
    assert errors[pipe] == "a named pipe, not a regular file (not opened)"
    assert errors[link] == "symbolic link to nothing (its target is missing)"
    read = table[table["error"] == ""]
    assert len(read) >= 15
    assert set(read["predicted"]) <= set(CLASSES)
    assert (read["top_1_probability"] >= read["top_2_probability"]).all()
    assert "top_3" not in table  # top-k as asked
    assert not any(".DS_Store" in p or "Thumbs.db" in p for p in table["path"])


def test_cli_writes_the_csv_and_names_what_is_missing(tmp_path, messy_split, classifier, capsys):
    root, _, _, _ = messy_split
    model_file = tmp_path / "model" / "model.keras"
    model_file.parent.mkdir()
    classifier.model.save(model_file)
    out = tmp_path / "predictions.csv"
    missing = f"class names {model_file.parent / 'labels.json'} is missing"
    with pytest.raises(ModelNotFoundError, match=re.escape(missing)):
        main([str(root / "tiny"), "--model", str(model_file), "--out", str(out)])

    labels = {"classes": CLASSES, "background": list(WHITE)}
    (model_file.parent / "labels.json").write_text(json.dumps(labels))
    with pytest.raises(InputNotFoundError, match=f"no such file or folder: {root / 'nowhere'}"):
        main([str(root / "nowhere"), "--model", str(model_file.parent)])

    assert (
        main(
            [
                str(root / "tiny"),
                str(root / "dog" / "cmyk.jpg"),
                "--model",
                str(model_file),
                "--out",
                str(out),
                "--top-k",
                "5",
            ]
        )
        == 0
    )
    table = pd.read_csv(out, keep_default_na=False)
    assert table["path"].tolist() == [
        str(root / "tiny/a.png"),
        str(root / "tiny/b.png"),
        str(root / "dog/cmyk.jpg"),
    ]
    assert list(table.columns)[-1] == "error" and "top_3_probability" in table  # 3 classes
    assert "3 images classified" in capsys.readouterr().out


def test_a_model_with_other_outputs_than_classes_is_refused(classifier):
    with pytest.raises(ValueError, match="3 outputs for 2 classes"):
        Classifier(classifier.model, CLASSES[:2])


def test_an_mlflow_uri_brings_the_run_s_class_names(tmp_path, monkeypatch, messy_split, classifier):
    import mlflow

    from pipeline.tracking.registry import load_classifier

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"classes": CLASSES, "background": [0, 0, 0]}))
    from pipeline.tracking import store

    with mlflow.start_run(experiment_id=store.configure()) as run:
        mlflow.keras.log_model(classifier.model, name="model", pip_requirements=["keras"])
        mlflow.log_artifact(str(labels), "models")
    loaded = load_classifier(f"runs:/{run.info.run_id}/model")
    assert loaded.classes == CLASSES and loaded.background == (0, 0, 0)
    root = messy_split[0]
    table = predict_files(loaded, [root / "tiny" / "a.png"])
    expected = predict_files(classifier, [root / "tiny" / "a.png"])
    assert table["predicted"].tolist() == expected["predicted"].tolist()
    with pytest.raises(ModelNotFoundError, match="no model at runs:/nope/model"):
        load_classifier("runs:/nope/model")


def test_a_file_pillow_reads_but_the_decoder_cannot_gets_its_reason(
    messy_split, classifier, monkeypatch
):
    """The batch is decoded again file by file, so the one file is named and the rest kept."""
    import tensorflow as tf

    root = messy_split[0]
    files = [root / "tiny" / "a.png", root / "tiny" / "b.png"]
    bad = classifier.ready(files[1].read_bytes())
    decode = classifier.images

    def images(contents: list[bytes]) -> np.ndarray:
        if bad in contents:
            raise tf.errors.InvalidArgumentError(None, None, "Invalid PNG data, size 57")
        return decode(contents)

    monkeypatch.setattr(classifier, "images", images)
    table = predict_files(classifier, files)
    assert table["error"].tolist() == ["", "Invalid PNG data, size 57"]
    assert table["predicted"].notna().tolist() == [True, False]
