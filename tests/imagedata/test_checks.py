from functools import partial

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.imagedata import manifest as mf
from pipeline.imagedata.checks import (
    Evidence,
    _image_facts,
    build_checks,
    confirm_near_duplicates,
    failure_message,
    image_facts,
    judged,
    nearest_training_image,
    reported_only,
    run_checks,
)
from pipeline.imagedata.images import Rules, list_images, seen_grey
from pipeline.imagedata.similarity import FIRST_CROPPED, SECOND_CROPPED, pixel_correlations
from pipeline.params import load_params
from tests.conftest import write_png

CLASSES = ["cat", "dog", "owl"]


def split_params():
    """The split's params as the `split` fixture made it: 60/20/20."""
    return load_params().split.model_copy(update={"validation": 0.2, "test": 0.2})


def failures(split: dict, table: str, **changes) -> list[dict]:
    """Failed expectations of one table, with `changes` to the inputs or to validate params."""
    inputs = {k: split[k] for k in ("manifest", "raw", "facts", "near", "classes")}
    params = {k: v for k, v in changes.items() if k not in inputs}
    inputs |= {k: v for k, v in changes.items() if k in inputs}
    cfg = load_params().validate_.model_copy(update=params)
    checks = build_checks(Evidence(**inputs), split=split_params(), channels=1, cfg=cfg)
    return [o for o in run_checks({table: checks[table]}) if not o["success"]]


def test_a_clean_split_meets_every_expectation(split, tmp_path):
    cfg = load_params().validate_
    inputs = {k: split[k] for k in ("manifest", "raw", "facts", "near", "classes")}
    checks = build_checks(Evidence(**inputs), split=split_params(), channels=1, cfg=cfg)
    outcomes = run_checks(checks, tmp_path / "docs")
    assert [o for o in outcomes if not o["success"]] == []
    assert len(outcomes) == 24
    assert (tmp_path / "docs" / "index.html").exists()


def test_class_missing_from_a_split_fails_naming_it(split):
    manifest = split["manifest"]
    gone = (manifest["label"] == "owl") & (manifest["split"] == "test")
    manifest = manifest[~gone]
    [failure] = failures(split, "class_split_counts", manifest=manifest)
    assert failure["offending"] == [{"count": 0, "label": "owl", "split": "test"}]


def content_in_two_splits(split: dict) -> dict:
    """The failed `content` expectation of a test image given a training image's hash."""
    manifest = split["manifest"].copy()
    train = manifest.index[manifest["split"] == "train"][0]
    test = manifest.index[manifest["split"] == "test"][0]
    manifest.loc[test, "sha256"] = manifest.loc[train, "sha256"]
    [failure] = failures(split, "content", manifest=manifest)
    return failure


def test_same_content_in_two_splits_fails(split):
    failure = content_in_two_splits(split)
    assert (failure["kwargs"]["column"], failure["unexpected_count"]) == ("n_splits", 1)


def test_same_content_under_two_classes_fails(split):
    manifest = split["manifest"].copy()
    cat = manifest.index[(manifest["label"] == "cat") & (manifest["split"] == "train")][0]
    dog = manifest.index[(manifest["label"] == "dog") & (manifest["split"] == "train")][0]
    manifest.loc[dog, "sha256"] = manifest.loc[cat, "sha256"]
    [failure] = failures(split, "content", manifest=manifest)
    assert failure["kwargs"]["column"] == "n_labels"


def test_file_listed_twice_fails(split):
    manifest = pd.concat([split["manifest"], split["manifest"].iloc[[0]]])
    names = {f["kwargs"]["column"] for f in failures(split, "manifest", manifest=manifest)}
    assert names == {"raw_path", "path"}


def test_split_shares_outside_tolerance_fail(split):
    manifest = split["manifest"].copy()
    manifest.loc[manifest["split"] == "validation", "split"] = "train"
    manifest.loc[manifest["split"] == "test", "split"] = "train"
    manifest = pd.concat(
        [manifest, split["manifest"][split["manifest"]["split"] == "test"].iloc[:3]]
    )
    [failure] = failures(split, "split_fractions", manifest=manifest.drop_duplicates("raw_path"))
    assert {o["split"] for o in failure["offending"]} == {"train", "validation", "test"}


def test_one_class_split_unevenly_fails_per_class(split):
    manifest = split["manifest"].copy()
    manifest.loc[manifest["label"] == "owl", "split"] = "train"  # 10/0/0 instead of 6/2/2
    [failure] = failures(split, "class_split_fractions", manifest=manifest)
    assert {(o["label"], o["split"]) for o in failure["offending"]} == {
        ("owl", "train"),
        ("owl", "validation"),
        ("owl", "test"),
    }


def test_near_duplicates_above_the_share_fail_with_both_files(split):
    """Three validation or test files replaced by copies of a training image: confirmed by
    their pixels (correlation 1), named with the training file, and over the share."""
    placed = mf.in_splits(split["manifest"])
    out = split["out"]
    train_path = placed[placed["split"] == "train"]["path"].iloc[0]
    held = placed[placed["split"] != "train"]["path"]
    for path in held.iloc[:3]:
        (out / path).unlink()  # a hard link to the raw file: replaced, not written through
        (out / path).write_bytes((out / train_path).read_bytes())
    facts = image_facts(out, placed["path"].tolist(), channels=1, rules=Rules.of(split_params()))
    near = confirm_near_duplicates(out, placed, facts, load_params().split)
    confirmed = near[near["confirmed"]]
    assert set(confirmed["path"]) == set(held.iloc[:3])
    assert (confirmed["nearest_train_path"] == train_path).all()
    assert (confirmed["correlation"] == 1.0).all()
    [failure] = failures(split, "near_duplicates", near=near, max_near_duplicate_share=0.1)
    assert {o["path"] for o in failure["offending"]} == set(held.iloc[:3])
    assert failures(split, "near_duplicates", near=near, max_near_duplicate_share=0.5) == []


def _smooth(seed: int, size: int = 64) -> np.ndarray:
    """A photo-like grey image: smooth random shapes, not noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((8, 8)) * 255
    image = Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image)


def test_copies_correlate_above_the_threshold_and_look_alikes_below(tmp_path):
    """Resized, JPEG re-encoded, brightened and lower-contrast copies of an image stay above
    `near_duplicate_correlation`; another image with the same outline falls below it."""
    original = _smooth(0)
    outline = np.where(_smooth(1) > 128, 0, 1)  # one silhouette for both objects
    thing, other = original * outline, _smooth(2) * outline
    Image.fromarray(thing.astype(np.uint8)).save(tmp_path / "train.png")
    image = Image.open(tmp_path / "train.png")
    image.resize((48, 48), Image.Resampling.BILINEAR).save(tmp_path / "resized.png")
    image.save(tmp_path / "reencoded.jpg", quality=75)
    Image.fromarray(np.clip(thing + 30, 0, 255).astype(np.uint8)).save(tmp_path / "bright.png")
    Image.fromarray((thing * 0.8 + 20).astype(np.uint8)).save(tmp_path / "flat.png")
    Image.fromarray(other.astype(np.uint8)).save(tmp_path / "look-alike.png")
    names = ["resized.png", "reencoded.jpg", "bright.png", "flat.png", "look-alike.png"]
    correlations = pixel_correlations(
        tmp_path, [(name, "train.png") for name in names], np.full(len(names), 32)
    )
    threshold = load_params().split.near_duplicate_correlation
    assert (correlations[:4] >= threshold).all(), correlations
    assert correlations[4] < threshold, correlations


def test_a_cropped_copy_correlates_once_registered_on_the_original(tmp_path):
    """A copy cut 4 pixels a side and enlarged back falls below the threshold compared as it
    is, and clears it against the original's centred crops; a look-alike does not."""
    thing = _smooth(0)
    Image.fromarray(thing).save(tmp_path / "train.png")
    cropped = Image.fromarray(thing).crop((4, 4, 60, 60)).resize((64, 64))
    cropped.save(tmp_path / "cropped.png")
    Image.fromarray(_smooth(2)).save(tmp_path / "other.png")
    pairs = [("cropped.png", "train.png"), ("train.png", "cropped.png"), ("other.png", "train.png")]
    threshold = load_params().split.near_duplicate_correlation
    plain = pixel_correlations(tmp_path, pairs[:1], np.array([32]))
    registered = pixel_correlations(
        tmp_path, pairs, np.full(3, 32), np.array([FIRST_CROPPED, SECOND_CROPPED, FIRST_CROPPED])
    )
    assert plain[0] < threshold <= registered[:2].min(), (plain, registered)
    assert registered[2] < threshold, registered


def test_nearest_training_image_distance_is_the_hamming_distance():
    placed = pd.DataFrame(
        {"path": ["a", "b", "c"], "split": ["train", "train", "test"], "label": ["x", "x", "x"]}
    )
    hashes = pd.Series(
        ["ffffffffffffffff", "0000000000000000", "0000000000000007"], index=["a", "b", "c"]
    )
    near = nearest_training_image(placed, hashes)
    assert near[["path", "nearest_train_path", "distance"]].values.tolist() == [["c", "b", 3]]


def test_unreadable_wrong_channel_and_tiny_images_fail(split):
    facts = split["facts"].copy()
    facts.loc[0, ["problem", "channels", "width", "height"]] = ["corrupt", np.nan, np.nan, np.nan]
    facts.loc[1, "channels"] = 3
    facts.loc[2, "oversized"] = True
    found = {
        (f["kwargs"]["column"], f["offending"][0]["path"])
        for f in failures(split, "images", facts=facts)
    }
    assert found == {
        ("problem", facts.loc[0, "path"]),
        ("channels", facts.loc[1, "path"]),
        ("oversized", facts.loc[2, "path"]),
    }


def test_class_imbalance_above_the_limit_names_the_small_class(split):
    manifest = split["manifest"]
    manifest = manifest.drop(manifest.index[manifest["label"] == "owl"][:8])  # owl: 2, others: 10
    [failure] = failures(split, "class_balance", manifest=manifest, max_class_imbalance=4)
    assert failure["offending"] == [{"count": 2, "label": "owl"}]
    assert failures(split, "class_balance", manifest=manifest, max_class_imbalance=5) == []


def test_labels_file_must_match_the_class_folders(split):
    write_png(split["root"] / "yak" / "0.png", 7)  # a class folder the split never saw
    [failure] = failures(split, "raw_classes", raw=list_images(split["root"]))
    assert failure["offending"][0]["label"] == "yak"
    [total] = failures(split, "totals", raw=list_images(split["root"]))
    assert total["offending"] == [{"left_out": 0, "placed": 30, "raw_files": 31, "unaccounted": 1}]


def test_failure_message_names_expectation_observation_and_offenders(split):
    manifest = split["manifest"]
    manifest = manifest[~((manifest["label"] == "owl") & (manifest["split"] == "test"))]
    message = failure_message(
        failures(split, "class_split_counts", manifest=manifest), 23, "r.json"
    )
    assert message == (
        "1 of 23 expectations failed (details in r.json):\n"
        "  class_split_counts.count: expect_column_values_to_be_between {'min_value': 1.0} "
        "-> 1 of 9 rows outside\n"
        "      count=0, label=owl, split=test"
    )


def test_given_splits_are_not_held_to_the_configured_shares(split):
    inputs = {k: split[k] for k in ("manifest", "raw", "facts", "near", "classes")}
    cfg = load_params().validate_
    ours = build_checks(Evidence(**inputs), split=split_params(), channels=1, cfg=cfg)
    given = build_checks(Evidence(**inputs), split=split_params(), channels=1, cfg=cfg, given=True)
    assert set(ours) - set(given) == {"split_fractions", "class_split_fractions"}


def test_imbalance_is_reported_and_stops_only_when_asked(split):
    manifest = split["manifest"]
    manifest = manifest.drop(manifest.index[manifest["label"] == "owl"][:8])
    [failure] = failures(split, "class_balance", manifest=manifest, max_class_imbalance=4)
    cfg = load_params().validate_
    assert cfg.class_imbalance == "report"  # the default: class weights handle it
    assert reported_only(failure, cfg, given=False)
    assert not reported_only(failure, cfg.model_copy(update={"class_imbalance": "error"}), False)


def test_content_in_two_splits_is_reported_only_where_the_source_gave_them(split):
    failure = content_in_two_splits(split)
    cfg = load_params().validate_
    assert not reported_only(failure, cfg, given=False)  # our own split must never leak
    assert reported_only(failure, cfg, given=True)
    assert not reported_only(failure, cfg.model_copy(update={"given_split_leaks": "error"}), True)
    # the gate's verdict over every outcome: failed, or only reported; a success is neither
    passed = {**failure, "success": True}
    assert judged([failure, passed], cfg, given=False) == ([failure], [])
    assert judged([failure, passed], cfg, given=True) == ([], [failure])


def test_the_gate_confirms_a_cropped_copy_across_splits_and_names_the_crop(tmp_path):
    """A test image cut 4 pixels a side from a training image is confirmed, with `cropped`
    naming the held-out image; the other test image, not a copy, is not."""
    paths = ["train/a/0.png", "train/a/1.png", "test/a/copy.png", "test/a/new.png"]
    pixels = [_smooth(1), _smooth(4), None, _smooth(5)]
    pixels[2] = np.asarray(Image.fromarray(pixels[0]).crop((4, 4, 60, 60)).resize((64, 64)))
    for path, values in zip(paths, pixels, strict=True):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(values).save(tmp_path / path)
    placed = pd.DataFrame(
        {
            "path": paths,
            "split": ["train", "train", "test", "test"],
            "label": ["a"] * 4,
            "group": "",
            "reason": "",
        }
    )
    facts = pd.DataFrame([_image_facts(tmp_path, Rules(), path) for path in paths])
    near = confirm_near_duplicates(tmp_path, placed, facts, load_params().split).set_index("path")
    copy = near.loc["test/a/copy.png"]
    assert copy["confirmed"] and copy["cropped"] == "held-out", copy
    assert copy["nearest_train_path"] == "train/a/0.png"
    assert not near.loc["test/a/new.png", "confirmed"]


def test_the_gate_decodes_without_tensorflows_cuda_notice(split):
    """On a machine without a GPU driver TensorFlow's CUDA build writes 'failed call to
    cuInit' when it first runs an op: the gate, which needs no GPU, keeps it out of its log."""
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from pipeline.imagedata.checks import image_facts;"
        "from pipeline.imagedata.images import Rules;"
        "f = image_facts(Path(sys.argv[1]), sys.argv[2:], 1, Rules());"
        "print(int(f['decodes'].sum()))"
    )
    paths = mf.in_splits(split["manifest"])["path"].tolist()
    run = subprocess.run(
        [sys.executable, "-c", code, str(split["out"]), *paths],
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.strip() == str(len(paths))
    assert "cuInit" not in run.stderr and "E0000" not in run.stderr, run.stderr


def test_a_pair_just_below_the_threshold_is_not_confirmed_by_its_rounded_correlation(tmp_path):
    """The gate decides on the correlation itself, as the split does (`similarity.confirmed`):
    a pair at 0.97997 under a threshold of 0.98 is no near duplicate, and its report shows
    0.9799, not 0.98 (the gate rounded first, and confirmed a pair the split had not: a
    T-shirt and a Dress of Fashion-MNIST stopped the gate on `other_class`)."""
    cfg, rules = load_params().split, Rules()
    (tmp_path / "train/a").mkdir(parents=True)
    (tmp_path / "test/a").mkdir(parents=True)
    Image.fromarray(_smooth(1)).save(tmp_path / "train/a/0.png")
    view = partial(seen_grey, rules=rules)
    for seed in range(50):  # a copy whose correlation's fifth decimal rounds it up
        noise = np.random.default_rng(seed).normal(0, 6, (64, 64))
        copy = np.clip(_smooth(1) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(copy).save(tmp_path / "test/a/copy.png")
        pair = [("test/a/copy.png", "train/a/0.png")]
        [r] = pixel_correlations(tmp_path, pair, np.array([32]), view=view)
        if round(r, 4) > r:
            break
    threshold = round(r, 4)
    assert r < threshold, r
    paths = ["train/a/0.png", "test/a/copy.png"]
    placed = pd.DataFrame(
        {"path": paths, "split": ["train", "test"], "label": "a", "group": "", "reason": ""}
    )
    facts = pd.DataFrame([_image_facts(tmp_path, rules, path) for path in paths])
    at = cfg.model_copy(update={"near_duplicate_correlation": threshold})
    near = confirm_near_duplicates(tmp_path, placed, facts, at).set_index("path")
    held = near.loc["test/a/copy.png"]
    assert held["nearest_train_path"] == "train/a/0.png" and held["distance"] <= 4, held
    assert not held["confirmed"] and held["correlation"] < threshold, held
    below = cfg.model_copy(update={"near_duplicate_correlation": threshold - 0.0001})
    assert (
        confirm_near_duplicates(tmp_path, placed, facts, below)
        .set_index("path")
        .loc["test/a/copy.png", "confirmed"]
    )
