"""Stage `validate` as a whole: a failed expectation stops it with every failure named, the
report and the Data Docs written; without a split it says which stage to run."""

import json

import pytest
import yaml

from pipeline import validate
from pipeline.imagedata.checks import ValidationFailed
from pipeline.imagedata.images import list_raw, write_raw_listing
from pipeline.params import load_params
from tests.projects import stage_error


def test_a_failed_expectation_stops_the_stage(split, tmp_path, monkeypatch, raw_params):
    out = split["out"]
    listing = tmp_path / "raw_listing.csv"
    write_raw_listing(list_raw(split["root"]), listing)
    manifest = split["manifest"]
    manifest[~((manifest["label"] == "owl") & (manifest["split"] == "test"))].to_csv(
        out / "manifest.csv", index=False
    )
    raw_params["base"]["channels"] = 1
    raw_params["split"].update(validation=0.2, test=0.2, class_fraction_tolerance=0.5)
    raw_params["validate"]["fraction_tolerance"] = 0.5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params))
    reports = tmp_path / "reports"
    monkeypatch.setattr(validate, "load_params", lambda: load_params(tmp_path / "params.yaml"))
    for name, value in {
        "SPLIT_MANIFEST": out / "manifest.csv",
        "LABELS_FILE": out / "labels.json",
        "SPLIT_DIR": out,
        "RAW_LISTING": listing,
        "VALIDATION_FILE": reports / "validation.json",
        "NEAR_DUPLICATES_FILE": reports / "near_duplicates.csv",
        "NEAR_DUPLICATES_PNG": reports / "near_duplicates.png",
        "DATA_DOCS_DIR": reports / "data_docs",
        "ROOT": tmp_path,
    }.items():
        monkeypatch.setattr(validate, name, value)
    with pytest.raises(ValidationFailed) as stop:
        validate.main()
    message = str(stop.value)
    assert message.startswith("3 of 24 expectations failed (details in reports/validation.json):")
    assert "      count=0, label=owl, split=test" in message
    assert message.endswith("Data Docs: reports/data_docs/index.html")
    report = json.loads((reports / "validation.json").read_text())
    assert report["success"] is False and report["failed"] == 3
    assert (reports / "data_docs" / "index.html").exists()


def test_without_a_split_the_stage_says_to_run_it(tmp_path):
    stderr = stage_error(tmp_path, "validate")
    assert stderr == (
        f"validate: error: {tmp_path / 'data/split/manifest.csv'} is missing: "
        "run `dvc repro split`\n"
    )


def test_the_pair_figure_says_which_confirmed_pairs_were_spread_on_purpose(tmp_path, monkeypatch):
    """A pair of a group `split.inseparable_groups: split` spread is no leak: the figure's
    title counts those and each such pair's caption says "spread"; a plain leak's does not."""
    import pandas as pd
    from PIL import Image

    for name, value in (("test/a/0.png", 10), ("test/a/1.png", 200), ("train/a/0.png", 20)):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (16, 16), value).save(tmp_path / name)
    monkeypatch.setattr(validate, "SPLIT_DIR", tmp_path)
    near = pd.DataFrame(
        {
            "path": ["test/a/0.png", "test/a/1.png"],
            "nearest_train_path": ["train/a/0.png"] * 2,
            "correlation": [0.99, 0.9999],
            "distance": [1, 0],
            "cropped": ["", ""],
            "confirmed": [True, True],
            "spread": [True, False],
        }
    )
    figure = validate.pair_figure(near, load_params().split)
    texts = [t.get_text() for sub in figure.subfigs for t in sub.texts]
    texts += [ax.get_title() for ax in figure.get_axes()]
    [title] = [t for t in texts if t.startswith("Near duplicates")]
    assert "2 confirmed" in title and "1 of them spread on purpose" in title, title
    captions = [t for t in texts if t.startswith("test/a/")]
    assert sorted(caption.endswith("spread") for caption in captions) == [False, True], captions
