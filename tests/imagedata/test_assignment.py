import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.contracts import Labels, read_labels
from pipeline.imagedata import manifest as mf
from pipeline.imagedata.assignment import (
    SplitError,
    SplitSetup,
    build_split,
    previous_assignments,
    split_assignments,
    split_sizes,
    write_split,
)
from pipeline.params import load_params
from tests.conftest import save_grey, smooth, write_png
from tests.messy_folder import MUESLI, build_messy_folder, pattern

FRACTIONS = {"train": 0.7, "validation": 0.15, "test": 0.15}
WHITE = (255, 255, 255)


def split_params(**changes):
    return load_params().split.model_copy(update=changes)


# ---- sizes and assignment: pure functions --------------------------------------------------


def test_split_sizes_meet_the_fractions():
    assert split_sizes(100, FRACTIONS) == {"train": 70, "validation": 15, "test": 15}
    assert split_sizes(7, FRACTIONS) == {"train": 5, "validation": 1, "test": 1}


def test_split_sizes_give_every_split_an_image_from_three():
    assert split_sizes(3, FRACTIONS) == {"train": 1, "validation": 1, "test": 1}
    assert split_sizes(2, FRACTIONS) == {"train": 2, "validation": 0, "test": 0}


def _contents(counts: dict[str, int], prefix: str = "") -> pd.DataFrame:
    rows = [
        {"label": label, "sha256": f"{prefix}{label}-{i}"}
        for label, n in counts.items()
        for i in range(n)
    ]
    return pd.DataFrame(rows, columns=["label", "sha256"])


def test_assignments_are_stratified_and_seeded():
    contents = _contents({"a": 100, "b": 40})
    first = split_assignments(contents, FRACTIONS, seed=1)
    assert first == split_assignments(contents, FRACTIONS, seed=1)
    assert first != split_assignments(contents, FRACTIONS, seed=2)
    counts = pd.Series([(label, name) for (label, _), name in first.items()]).value_counts()
    assert counts[("a", "train")] == 70 and counts[("a", "test")] == 15
    assert counts[("b", "train")] == 28 and counts[("b", "validation")] == 6


def test_previous_placements_are_kept_and_new_images_fill_the_gaps():
    before = _contents({"a": 40})
    previous = split_assignments(before, FRACTIONS, seed=0)
    grown = pd.concat([before, _contents({"a": 60}, prefix="new-")])
    after = split_assignments(grown, FRACTIONS, seed=0, previous=previous)
    assert {key: after[key] for key in previous} == previous
    assert pd.Series(after).value_counts().to_dict() == {"train": 70, "validation": 15, "test": 15}


def test_train_only_classes_stay_in_train():
    contents = _contents({"a": 30, "tiny": 2})
    assignment = split_assignments(contents, FRACTIONS, seed=0, train_only={"tiny"})
    assert {assignment[("tiny", "tiny-0")], assignment[("tiny", "tiny-1")]} == {"train"}


@st.composite
def class_contents(draw) -> pd.DataFrame:
    """Classes of 3 to 60 distinct contents; the digests are real sha256 hex strings."""
    counts = draw(st.dictionaries(st.sampled_from("abcde"), st.integers(3, 60), min_size=1))
    salt = draw(st.integers(0, 2**32))
    rows = [
        {"label": label, "sha256": hashlib.sha256(f"{salt}/{label}/{i}".encode()).hexdigest()}
        for label, n in counts.items()
        for i in range(n)
    ]
    return pd.DataFrame(rows)


fractions_strategy = st.tuples(st.floats(0.05, 0.3), st.floats(0.05, 0.3)).map(
    lambda vt: {"train": 1 - vt[0] - vt[1], "validation": vt[0], "test": vt[1]}
)
property_settings = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@property_settings
@given(contents=class_contents(), fractions=fractions_strategy, seed=st.integers(0, 2**31))
def test_property_same_input_and_seed_same_split(contents, fractions, seed):
    shuffled = contents.sample(frac=1, random_state=seed % 1000)
    assert split_assignments(contents, fractions, seed) == split_assignments(
        shuffled, fractions, seed
    )


@property_settings
@given(
    contents=class_contents(),
    extra=class_contents(),
    fractions=fractions_strategy,
    seed=st.integers(0, 2**31),
)
def test_property_adding_files_moves_nothing_else(contents, extra, fractions, seed):
    before = split_assignments(contents, fractions, seed)
    extra = extra.assign(sha256="new-" + extra["sha256"])
    after = split_assignments(pd.concat([contents, extra]), fractions, seed, previous=before)
    assert {key: after[key] for key in before} == before


@property_settings
@given(contents=class_contents(), fractions=fractions_strategy, seed=st.integers(0, 2**31))
def test_property_no_content_in_two_splits(contents, fractions, seed):
    duplicated = pd.concat([contents, contents.sample(frac=0.3, random_state=1)])
    assignment = split_assignments(duplicated, fractions, seed)
    assert len(assignment) == contents.groupby(["label", "sha256"]).ngroups  # one split per content


@property_settings
@given(contents=class_contents(), fractions=fractions_strategy, seed=st.integers(0, 2**31))
def test_property_fractions_within_one_image_per_class(contents, fractions, seed):
    assignment = split_assignments(contents, fractions, seed)
    placed = pd.Series(assignment)
    for label, n in contents.groupby("label").size().items():
        counts = placed[label].value_counts()
        assert all(counts.get(name, 0) >= 1 for name in fractions)  # every class in every split
        if n * min(fractions.values()) >= 1:  # else "one in every split" takes precedence
            for name, share in fractions.items():
                assert abs(counts.get(name, 0) - n * share) < 1, (label, name, n, share)


# ---- the whole stage on a messy folder ------------------------------------------------------


@pytest.fixture(scope="module")
def messy(tmp_path_factory) -> tuple[Path, dict[str, str], pd.DataFrame, Path]:
    """The messy folder split with lenient policies, and the written split folder."""
    base = tmp_path_factory.mktemp("messy")
    root = base / "raw"
    cases = build_messy_folder(root)
    cfg = split_params(
        small_classes="drop", max_rejected_fraction=0.5, background=WHITE, max_image_pixels=5000
    )
    table = build_split(root, SplitSetup(cfg, 0, 3), previous={})
    out = base / "split"
    write_split(table, root, out, SplitSetup(cfg, 0, 3))
    return root, cases, mf.read_manifest(out / "manifest.csv"), out


def _row(manifest: pd.DataFrame, raw_path: str) -> pd.Series:
    rows = manifest[manifest["raw_path"] == raw_path]
    assert len(rows) == 1, f"{raw_path} is listed {len(rows)} times"
    return rows.iloc[0]


def test_hidden_files_and_junk_are_neither_images_nor_classes_but_listed(messy):
    """Hidden entries and the OS's small files are listed as ignored; OS debris folders are
    rejected (each one entry, not read), so they count toward split.max_rejected_fraction."""
    _, _, manifest, out = messy
    status = manifest.set_index("raw_path")["status"]
    for path in (".DS_Store", ".hidden_class", "dog/Thumbs.db", "dog/.ipynb_checkpoints"):
        assert status[path] == mf.IGNORED, path
    for path in ("__MACOSX", "$RECYCLE.BIN", "lost+found", "dog/@eaDir"):
        assert status[path] == mf.REJECTED, path
    reasons = manifest.set_index("raw_path")["reason"]
    assert reasons["dog/@eaDir"] == "OS debris folder (not read)"
    junk = manifest["raw_path"].str.contains(r"(?:^|/)\.|__MACOSX|Thumbs|@eaDir|RECYCLE|lost\+")
    assert set(manifest.loc[junk, "split"]) == {""}
    rejected = pd.read_csv(out / "rejected.csv", keep_default_na=False)
    assert set(manifest.loc[junk, "raw_path"]) <= set(rejected["raw_path"])
    assert read_labels(out / "labels.json").classes == ["Cat Photos", MUESLI, "dog"]


def test_a_class_with_no_usable_image_is_reported_never_silently_gone(messy):
    _, _, _, out = messy
    summary = pd.read_csv(out / "summary.csv").set_index("class")
    assert summary.loc["empty class", "class_status"] == "no usable image"
    assert summary.loc["broken", "class_status"] == "no usable image"
    assert summary.loc["tiny", "class_status"] == mf.DROPPED


def test_a_class_with_no_usable_image_stops_the_split_by_default(tmp_path):
    for name in ("cat", "dog"):
        for i in range(3):
            write_png(tmp_path / name / f"{i}.png", 10 * len(name) + i)
    (tmp_path / "owl").mkdir()
    (tmp_path / "yak").mkdir()
    (tmp_path / "yak" / "a.png").write_text("not a picture")
    with pytest.raises(SplitError, match=r"'owl' \(no usable image\), 'yak' \(no usable image\)"):
        build_split(
            tmp_path, SplitSetup(split_params(max_rejected_fraction=0.5), 0, 3), previous={}
        )


def test_debris_does_not_count_toward_the_rejected_fraction(tmp_path):
    for i in range(10):
        write_png(tmp_path / "cat" / f"{i}.png", i)
    for i in range(30):
        (tmp_path / "cat" / f".thumb_{i}").write_bytes(b"x")
    table = build_split(
        tmp_path, SplitSetup(split_params(max_rejected_fraction=0.0), 0, 3), previous={}
    )
    assert (table["status"] == mf.IGNORED).sum() == 30


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("text", "not an image (no known image format)"),
        ("empty", "empty file"),
        ("truncated", "corrupt or truncated image (OSError: image file is truncated"),
        ("corrupt_jpeg", "corrupt or truncated image"),
        ("symlink_outside", "symbolic link pointing outside the image folder"),
        ("symlink_folder", "symbolic link to a folder (not followed)"),
        ("named_pipe", "a named pipe, not a regular file (not opened)"),
        ("broken_link", "symbolic link to nothing (its target is missing)"),
        ("loose_file", "file beside the class folders (no class)"),
        ("all_broken_class", "not an image (no known image format)"),
        (
            "too_large",
            "declared size 100x100 (0.01 megapixels) is more than split.max_image_pixels "
            "(0.005 megapixels): not decoded",
        ),
    ],
)
def test_unusable_files_are_rejected_with_their_reason(messy, case, reason):
    _, cases, manifest, out = messy
    row = _row(manifest, cases[case])
    assert (row["status"], row["split"], row["path"]) == (mf.REJECTED, "", "")
    assert row["reason"].startswith(reason)
    assert cases[case] in (out / "rejected.csv").read_text()


@pytest.mark.parametrize(
    ("case", "fmt", "mode", "action"),
    [
        ("png_named_jpg", "PNG", "RGB", "linked"),
        ("jpeg_rgb", "JPEG", "RGB", "linked"),
        ("bmp", "BMP", "RGB", "converted: BMP re-encoded as PNG"),
        ("webp", "WEBP", "RGB", "converted: WEBP re-encoded as PNG"),
        ("tiff", "TIFF", "RGB", "converted: TIFF re-encoded as PNG"),
        ("gif", "GIF", "P", "converted: GIF re-encoded as PNG; P -> RGB"),
        ("gray", "PNG", "L", "converted: L -> RGB"),
        ("palette", "PNG", "P", "converted: P -> RGB"),
        ("cmyk", "JPEG", "CMYK", "converted: JPEG re-encoded at quality 90; CMYK -> RGB"),
        ("bilevel", "PNG", "1", "converted: 1 -> L; L -> RGB"),
        ("sixteen_bit", "PNG", "I;16", "converted: I;16 scaled to 8 bits; L -> RGB"),
        (
            "gray_alpha_transparent",
            "PNG",
            "LA",
            "converted: transparency composited on RGB(255, 255, 255)",
        ),
        (
            "palette_transparent",
            "PNG",
            "P",
            "converted: transparency composited on RGB(255, 255, 255)",
        ),
        (
            "rgba_transparent",
            "PNG",
            "RGBA",
            "converted: transparency composited on RGB(255, 255, 255)",
        ),
        (
            "exif_rotated",
            "JPEG",
            "RGB",
            "converted: JPEG re-encoded at quality 90; EXIF orientation 6 applied",
        ),
        (
            "rgb_colour_key",
            "PNG",
            "RGB",
            "converted: transparency composited on RGB(255, 255, 255)",
        ),
        ("grey_colour_key", "PNG", "L", "converted: transparency composited on RGB(255, 255, 255)"),
        (
            "animated_gif",
            "GIF",
            "P",
            "converted: GIF re-encoded as PNG; first of 3 frames kept; P -> RGB",
        ),
        ("apng", "PNG", "RGB", "converted: first of 3 frames kept"),
        (
            "multipage_tiff",
            "TIFF",
            "RGB",
            "converted: TIFF re-encoded as PNG; first of 2 frames kept",
        ),
    ],
)
def test_every_image_reaches_the_configured_colour_model(messy, case, fmt, mode, action):
    _, cases, manifest, out = messy
    row = _row(manifest, cases[case])
    assert (row["status"], row["format"], row["mode"]) == (mf.OK, fmt, mode)
    assert row["action"] == action
    with Image.open(out / row["path"]) as image:
        assert image.mode == "RGB"
        assert image.format in {"PNG", "JPEG"}
        assert getattr(image, "n_frames", 1) == 1


def test_colour_key_transparency_becomes_the_background(messy):
    _, cases, manifest, out = messy
    rgb = np.asarray(Image.open(out / _row(manifest, cases["rgb_colour_key"])["path"]))
    assert (rgb[:, :6] == (200, 0, 0)).all() and (rgb[:, 6:] == 255).all()
    grey = np.asarray(Image.open(out / _row(manifest, cases["grey_colour_key"])["path"]))
    assert (grey[:, :6] == 99).all() and (grey[:, 6:] == 255).all()


def test_the_first_frame_is_the_one_kept(messy):
    _, cases, manifest, out = messy
    kept = np.asarray(Image.open(out / _row(manifest, cases["apng"])["path"]))
    assert (kept == np.asarray(pattern(40))).all()


@pytest.mark.parametrize("channels", [1, 3])
def test_the_training_decoder_reads_every_file_the_split_places(tmp_path_factory, channels):
    """Every placed file of the messy folder, decoded by the training decoder itself at the
    configured channels (a file it refused would fail inside fit, naming no file)."""
    import tensorflow as tf

    from pipeline.imagedata.dataset import decode_full, decoder_failures

    base = tmp_path_factory.mktemp(f"decode{channels}")
    build_messy_folder(base / "raw")
    cfg = split_params(small_classes="drop", max_rejected_fraction=0.5, max_image_pixels=5000)
    table = build_split(base / "raw", SplitSetup(cfg, 0, channels), previous={})
    write_split(table, base / "raw", base / "split", SplitSetup(cfg, 0, channels))
    placed = mf.in_splits(mf.read_manifest(base / "split" / "manifest.csv"))
    assert len(placed) > 40
    assert decoder_failures(base / "split", placed["path"].tolist(), channels) == {}
    for path in placed["path"]:
        image = decode_full(tf.io.read_file(str(base / "split" / path)), channels)
        assert image.shape[-1] == channels


def test_transparency_becomes_the_background_never_black(messy):
    _, cases, manifest, out = messy
    for case in ("rgba_transparent", "gray_alpha_transparent"):
        pixels = np.asarray(Image.open(out / _row(manifest, cases[case])["path"]))
        assert (pixels == 255).all(), case


def test_sixteen_bit_white_stays_white(messy):
    _, cases, manifest, out = messy
    pixels = np.asarray(Image.open(out / _row(manifest, cases["sixteen_bit"])["path"]))
    assert (pixels == 255).all()


def test_exif_orientation_is_applied(messy):
    _, cases, manifest, out = messy
    row = _row(manifest, cases["exif_rotated"])
    assert (row["width"], row["height"]) == ("20", "10")  # as stored
    assert Image.open(out / row["path"]).size == (10, 20)  # as shown


def test_linked_files_are_hard_links(messy):
    root, cases, manifest, out = messy
    row = _row(manifest, cases["png_named_jpg"])
    assert (out / row["path"]).stat().st_ino == (root / row["raw_path"]).stat().st_ino
    assert row["path"].endswith("really_png.jpg")  # linked files keep their name


def test_small_class_is_dropped_and_reported_by_policy(messy):
    _, cases, manifest, out = messy
    row = _row(manifest, cases["small_class"])
    assert (row["status"], row["split"]) == (mf.DROPPED, "")
    assert (
        row["reason"] == "class has 2 distinct image(s), fewer than 3 (split.small_classes: drop)"
    )
    assert "tiny" not in (out / "labels.json").read_text()
    summary = pd.read_csv(out / "summary.csv").set_index("class")
    assert summary.loc["tiny", "class_status"] == mf.DROPPED


def test_class_names_are_normalised_to_nfc(messy):
    _, cases, manifest, out = messy
    row = _row(manifest, cases["nfd_class"])
    assert row["label"] == MUESLI
    assert row["path"].startswith(f"{row['split']}/{MUESLI}/")
    assert (out / row["path"]).exists()


def test_identical_files_share_a_split(messy):
    _, cases, manifest, _ = messy
    copy, original = _row(manifest, cases["duplicate"]), _row(manifest, cases["duplicate_original"])
    assert copy["split"] == original["split"] != ""
    inside = _row(manifest, cases["symlink_inside"])  # a link inside the folder is a copy too
    assert inside["split"] == _row(manifest, "dog/good_1.png")["split"]


def test_same_bytes_under_two_classes_are_excluded_as_conflicts(messy):
    _, cases, manifest, _out = messy
    for case, other in (("conflict_a", "dog"), ("conflict_b", "Cat Photos")):
        row = _row(manifest, cases[case])
        assert (row["status"], row["split"]) == (mf.CONFLICT, "")
        assert repr(other) in row["reason"]


def test_labels_file_is_the_sorted_class_list(messy):
    _, _, _, out = messy
    # with the split's pixel limit, which predict and serving apply too
    # and working size, which they store a new image at
    expected = Labels(["Cat Photos", "Müsli", "dog"], WHITE, 5000, 512, 90)
    assert read_labels(out / "labels.json") == expected


def test_manifest_lists_every_input_file_once(messy):
    _root, _, manifest, _ = messy
    assert manifest["raw_path"].is_unique
    assert list(manifest.columns) == mf.COLUMNS
    placed = mf.in_splits(manifest)
    assert (placed["path"].str.split("/").str[0] == placed["split"]).all()
    assert placed.groupby("sha256")["split"].nunique().max() == 1


def test_summary_counts_every_class_and_split(messy):
    _, _, manifest, out = messy
    summary = pd.read_csv(out / "summary.csv").set_index("class")
    dog = mf.in_splits(manifest).query("label == 'dog'")["split"].value_counts()
    assert summary.loc["dog", ["train", "validation", "test"]].to_dict() == dog.to_dict()
    assert summary.loc["dog", "rejected"] == 10 and summary.loc["dog", "conflict"] == 1


# ---- policies that stop the stage ----------------------------------------------------------


def test_small_class_stops_the_stage_by_default(image_tree):
    write_png(image_tree / "tiny" / "a.png", 901)
    write_png(image_tree / "tiny" / "b.png", 902)
    with pytest.raises(
        SplitError, match=r"fewer than 3 distinct images, too few for every split: 'tiny' \(2\)"
    ):
        build_split(image_tree, SplitSetup(split_params(), 0, 3), previous={})


def test_too_many_bad_files_stop_the_stage_with_the_list(image_tree):
    (image_tree / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (image_tree / "owl" / "empty.jpg").touch()
    with pytest.raises(SplitError) as error:
        build_split(image_tree, SplitSetup(split_params(max_rejected_fraction=0.05), 0, 3), {})
    assert str(error.value) == (
        "2 of 32 files (6.2%) are not usable images, more than "
        "split.max_rejected_fraction = 5.0%:\n"
        "  dog/broken.png: corrupt or truncated image (OSError: Truncated File Read)\n"
        "  owl/empty.jpg: empty file"
    )


def test_conflicts_can_stop_the_stage(image_tree):
    (image_tree / "dog" / "same.png").write_bytes((image_tree / "cat" / "0.png").read_bytes())
    with pytest.raises(SplitError, match=r"2 image\(s\) show a picture also filed under another"):
        build_split(image_tree, SplitSetup(split_params(conflicting_labels="error"), 0, 3), {})


def test_train_only_policy_keeps_a_small_class_in_train(image_tree):
    write_png(image_tree / "tiny" / "a.png", 901)
    table = build_split(image_tree, SplitSetup(split_params(small_classes="train_only"), 0, 3), {})
    tiny = table[table["label"] == "tiny"]
    assert set(tiny["split"]) == {"train"} and set(tiny["status"]) == {mf.TRAIN_ONLY}


def test_empty_raw_folder_is_an_error(tmp_path):
    with pytest.raises(SplitError, match="holds no class folder with files in it"):
        build_split(tmp_path, SplitSetup(split_params(), 0, 3), {})


# ---- stability through the files the stage writes -------------------------------------------


def test_adding_images_moves_no_image_already_split(image_tree, tmp_path):
    cfg = split_params()
    out = tmp_path / "split"
    first = build_split(image_tree, SplitSetup(cfg, 3, 3), previous={})
    write_split(first, image_tree, out, SplitSetup(cfg, 3, 3))
    for i in range(10, 40):
        write_png(image_tree / "owl" / f"{i}.png", 500 + i)
    previous = previous_assignments(out, 3, cfg.fractions)
    second = build_split(image_tree, SplitSetup(cfg, 3, 3), previous=previous)
    merged = first.merge(second, on="raw_path", suffixes=("_before", "_after"))
    assert (merged["split_before"] == merged["split_after"]).all()
    owl = second[second["label"] == "owl"]["split"].value_counts().to_dict()
    assert owl == {"train": 28, "validation": 6, "test": 6}  # new images filled the gaps


def test_changing_the_seed_starts_afresh(image_tree, tmp_path):
    cfg = split_params()
    write_split(
        build_split(image_tree, SplitSetup(cfg, 3, 3), {}),
        image_tree,
        tmp_path,
        SplitSetup(cfg, 3, 3),
    )
    assert previous_assignments(tmp_path, 3, cfg.fractions)
    assert previous_assignments(tmp_path, 4, cfg.fractions) == {}


def _given_tree(root: Path, splits: dict[str, int]) -> Path:
    """`root/<split>/<class>/<n>.png`: for each given split, that many distinct images of
    each of two classes."""
    value = 0
    for split, count in splits.items():
        for label in ("cat", "dog"):
            for i in range(count):
                value += 1
                write_png(root / split / label / f"{i}.png", value)
    return root


def test_split_sizes_give_no_image_to_a_split_without_a_share():
    sizes = split_sizes(40, {"train": 0.85, "validation": 0.15, "test": 0.0})
    assert sizes == {"train": 34, "validation": 6, "test": 0}


def test_given_test_is_kept_and_validation_is_carved_from_given_train(tmp_path):
    raw = _given_tree(tmp_path / "raw", {"train": 40, "test": 10})
    table = build_split(raw, SplitSetup(split_params(validation=0.15), 0, 1), previous={})
    given_test = table["given_split"] == "test"
    assert (table.loc[given_test, "split"] == "test").all()  # the official test set, whole
    carved = table[table["given_split"] == "train"].groupby(["label", "split"]).size()
    assert carved.to_dict() == {
        ("cat", "train"): 34,
        ("cat", "validation"): 6,
        ("dog", "train"): 34,
        ("dog", "validation"): 6,
    }
    assert table.loc[0, "raw_path"] == "train/cat/0.png"
    assert set(table["path"].str.split("/").str[0]) == {"train", "validation", "test"}
    assert "test/dog/9.png" in set(table["path"])  # <split>/<class>/<file>, no folder twice
    again = build_split(raw, SplitSetup(split_params(validation=0.15), 0, 1), previous={})
    assert again["split"].tolist() == table["split"].tolist()  # stable


def test_given_validation_is_kept_exactly(tmp_path):
    raw = _given_tree(tmp_path / "raw", {"train": 5, "validation": 1, "test": 2})
    table = build_split(raw, SplitSetup(split_params(), 0, 1), previous={})
    assert table["split"].tolist() == table["given_split"].tolist()
    out = tmp_path / "split"
    write_split(table, raw, out, SplitSetup(split_params(), 0, 1))
    assert len(list((out / "validation" / "cat").iterdir())) == 1
    assert read_labels(out / "labels.json").classes == ["cat", "dog"]
    state = json.loads((out / "split.json").read_text())
    assert state["given_splits"] == ["train", "validation", "test"]


def test_a_grown_given_train_keeps_its_carved_validation(tmp_path):
    raw = _given_tree(tmp_path / "raw", {"train": 40, "test": 10})
    cfg = split_params(validation=0.15)
    first = build_split(raw, SplitSetup(cfg, 0, 1), previous={})
    out = tmp_path / "split"
    write_split(first, raw, out, SplitSetup(cfg, 0, 1))
    write_png(raw / "train" / "cat" / "new.png", 9999)
    previous = previous_assignments(out, 0, cfg.fractions)
    second = build_split(raw, SplitSetup(cfg, 0, 1), previous=previous)
    merged = first.merge(second, on="raw_path", suffixes=("_first", "_second"))
    assert (merged["split_first"] == merged["split_second"]).all()
    assert second.loc[second["raw_path"] == "train/cat/new.png", "split"].item() in (
        "train",
        "validation",
    )


def _planted_folder(root: Path) -> dict[str, list[str]]:
    """Two classes of smooth photo-like images; in class `a`, three images each with four
    copies (resized, JPEG re-encoded, brightened, cropped 4 pixels a side and enlarged back,
    which the plain hash and correlation miss) and one with a look-alike (the same outline,
    other content). Returns each original's family: the original and its copies."""
    from tests.imagedata.test_checks import _smooth

    families: dict[str, list[str]] = {}
    outline = np.where(_smooth(999) > 128, 0, 1)
    for c, name in enumerate("ab"):
        for i in range(12):
            pixels = (_smooth(100 * c + i) * (outline if i == 0 else 1)).astype(np.uint8)
            path = root / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
            if name == "a" and i < 3:
                image = Image.open(path)
                image.resize((96, 96), Image.Resampling.BILINEAR).save(root / "a" / f"{i}-big.png")
                image.save(root / "a" / f"{i}-copy.jpg", quality=75)
                bright = np.clip(pixels.astype(int) + 30, 0, 255).astype(np.uint8)
                Image.fromarray(bright).save(root / "a" / f"{i}-bright.png")
                cropped = image.crop((4, 4, 60, 60)).resize((64, 64), Image.Resampling.BICUBIC)
                cropped.save(root / "a" / f"{i}-cropped.png")
                kinds = (".png", "-big.png", "-copy.jpg", "-bright.png", "-cropped.png")
                families[f"a/{i}.png"] = [f"a/{i}{kind}" for kind in kinds]
    look_alike = (_smooth(555) * outline).astype(np.uint8)
    Image.fromarray(look_alike).save(root / "a" / "look-alike.png")
    return families


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_near_duplicates_stay_in_one_split_and_look_alikes_do_not_join_them(tmp_path, seed):
    families = _planted_folder(tmp_path / "raw")
    cfg = split_params(validation=0.25, test=0.25)
    table = build_split(tmp_path / "raw", SplitSetup(cfg, seed, "auto"), previous={})
    row = table.set_index("raw_path")
    for members in families.values():
        assert row.loc[members, "split"].nunique() == 1, row.loc[members, ["split", "group"]]
        assert row.loc[members, "group"].nunique() == 1 and row.loc[members[0], "group"] != ""
    assert row.loc["a/look-alike.png", "group"] == ""  # the same outline, another object
    assert row.loc["a/0.png", "group"] != row.loc["a/look-alike.png", "group"]
    grouped = table[table["group"] != ""]
    assert set(grouped["raw_path"]) == {m for members in families.values() for m in members}
    sizes = table[table["label"] == "b"]["split"].value_counts()
    assert sizes.to_dict() == {"train": 6, "validation": 3, "test": 3}  # b: no group, exact


def test_a_grown_group_joins_its_split_and_the_state_counts_groups(tmp_path):
    families = _planted_folder(tmp_path / "raw")
    cfg = split_params(validation=0.25, test=0.25)
    first = build_split(tmp_path / "raw", SplitSetup(cfg, 0, "auto"), previous={})
    write_split(first, tmp_path / "raw", tmp_path / "split", SplitSetup(cfg, 0, 1))
    state = json.loads((tmp_path / "split" / "split.json").read_text())
    assert (state["near_duplicate_groups"], state["in_near_duplicate_groups"]) == (3, 15)
    manifest = mf.read_manifest(tmp_path / "split" / "manifest.csv")
    assert (manifest["group"] != "").sum() == 15

    original = Image.open(tmp_path / "raw" / "a" / "1.png")
    original.resize((40, 40)).save(tmp_path / "raw" / "a" / "1-smaller.png")
    previous = previous_assignments(tmp_path / "split", 0, cfg.fractions)
    second = build_split(tmp_path / "raw", SplitSetup(cfg, 0, "auto"), previous=previous)
    row = second.set_index("raw_path")
    assert row.loc["a/1-smaller.png", "split"] == row.loc[families["a/1.png"][0], "split"]
    kept = first.set_index("raw_path")["split"]
    assert (row.loc[kept.index, "split"] == kept).all()  # nothing already split moved


def test_a_carved_validation_split_keeps_groups_in_train_or_validation(tmp_path):
    families = _planted_folder(tmp_path / "given" / "train")
    for name in "ab":
        for i in range(3):
            write_png(
                tmp_path / "given" / "test" / name / f"t{i}.png", value=500 + 10 * i + ord(name)
            )
    cfg = split_params(validation=0.3)
    for seed in range(4):
        table = build_split(tmp_path / "given", SplitSetup(cfg, seed, "auto"), previous={})
        row = table.set_index("raw_path")
        for members in families.values():
            assert row.loc[["train/" + m for m in members], "split"].nunique() == 1
        assert (table[table["given_split"] == "test"]["split"] == "test").all()
        assert (table[table["given_split"] == "test"]["group"] == "").all()  # not ours


# ---- one rule per decision: the split decides, the gate verifies with the same function ----


def test_the_split_and_the_gate_give_each_planted_file_the_same_verdict_and_reason(image_tree):
    """One file per per-file rule, planted in the raw folder: the split's reason for leaving it
    out is the gate's reason for refusing it when an edited split holds it."""
    from pipeline.imagedata.checks import _image_facts
    from pipeline.imagedata.images import Rules

    cat = image_tree / "cat"
    (cat / "corrupt.png").write_bytes((cat / "0.png").read_bytes()[:60])
    (cat / "empty.png").write_bytes(b"")
    (cat / "text.png").write_text("not an image")
    write_png(cat / "tiny.png", 7, size=4)
    cfg = split_params(max_rejected_fraction=0.5, max_image_pixels=5000)
    table = build_split(image_tree, SplitSetup(cfg, 0, 1), {}).set_index("raw_path")
    planted = ["cat/corrupt.png", "cat/empty.png", "cat/text.png", "cat/tiny.png"]
    for path in planted:
        assert table.loc[path, "status"] == mf.REJECTED, path
        gate = _image_facts(image_tree, Rules.of(cfg), path)
        assert gate["problem"] == table.loc[path, "reason"], path
    assert table.loc["cat/tiny.png", "reason"] == (
        "too small: 4x4 pixels, a side below split.min_image_size (8)"
    )
    # a placed file passes the gate's rule, by construction
    placed = table[table["split"] != ""].index
    assert all(_image_facts(image_tree, Rules.of(cfg), p)["problem"] is None for p in placed)


def test_a_large_image_is_kept_and_stored_at_the_largest_side_the_gate_allows(image_tree, tmp_path):
    from pipeline.imagedata.checks import image_facts
    from pipeline.imagedata.images import Rules

    write_png(image_tree / "cat" / "large.png", 11, size=40)
    cfg = split_params(max_image_size=16)
    table = build_split(image_tree, SplitSetup(cfg, 0, 1), {})
    large = table[table["raw_path"] == "cat/large.png"].iloc[0]
    assert large["status"] == mf.OK and large["convert"]
    out = tmp_path / "split"
    write_split(table, image_tree, out, SplitSetup(cfg, 0, 1))
    with Image.open(out / large["path"]) as stored:
        assert stored.size == (16, 16)
    facts = image_facts(out, [large["path"]], 1, Rules.of(cfg))
    assert not facts["oversized"].any() and facts["problem"].isna().all()
    assert (
        "40x40 scaled to 16x16"
        in mf.read_manifest(out / "manifest.csv")
        .set_index("raw_path")
        .loc["cat/large.png", "action"]
    )


def test_a_near_duplicate_under_two_classes_is_a_conflict_listed_with_both(image_tree):
    save_grey(smooth(1), image_tree / "cat" / "photo.png")
    Image.open(image_tree / "cat" / "photo.png").resize((40, 40)).save(image_tree / "dog" / "x.jpg")
    table = build_split(image_tree, SplitSetup(split_params(), 0, 1), {}).set_index("raw_path")
    assert table.loc["dog/x.jpg", "status"] == mf.CONFLICT
    assert table.loc["dog/x.jpg", "reason"] == (
        "near duplicate of cat/photo.png (class 'cat') under class 'dog'"
    )
    assert table.loc["cat/photo.png", "reason"] == (
        "near duplicate of dog/x.jpg (class 'dog') under class 'cat'"
    )


def _variations(root: Path, label: str = "frames", count: int = 10) -> None:
    for i in range(count):  # one picture, lit `count` ways: one group of near duplicates
        save_grey(smooth(999) * (0.8 + 0.02 * i) + i, root / label / f"{i}.png")


def test_a_class_of_one_picture_stops_the_split_naming_the_class_and_its_group(image_tree):
    _variations(image_tree)
    with pytest.raises(SplitError) as stop:
        build_split(image_tree, SplitSetup(split_params(), 0, 1), {})
    message = str(stop.value)
    assert (
        "'frames': 10 images in 1 near-duplicate group(s) and 0 image(s) alike to no other; "
        "the largest 10 images, such as frames/0.png, frames/1.png; it would split train 10, "
        "validation 0, test 0" in message
    )
    assert "Set split.inseparable_groups to train_only" in message


def test_inseparable_groups_kept_in_train_or_spread_as_the_policy_says(image_tree):
    _variations(image_tree)
    table = build_split(
        image_tree, SplitSetup(split_params(inseparable_groups="train_only"), 0, 1), {}
    )
    frames = table[table["label"] == "frames"]
    assert set(frames["split"]) == {"train"} and set(frames["status"]) == {mf.TRAIN_ONLY}
    table = build_split(image_tree, SplitSetup(split_params(inseparable_groups="split"), 0, 1), {})
    frames = table[table["label"] == "frames"]
    assert frames["split"].value_counts().to_dict() == split_sizes(10, split_params().fractions)
    assert set(frames["reason"]) == {mf.SPREAD} and set(frames["status"]) == {mf.OK}
    others = table[table["label"] != "frames"]
    assert set(others["reason"]) == {""}


def test_a_transparent_palette_image_warns_nothing_unnamed(tmp_path):
    """Pillow's 'Palette images with Transparency expressed in bytes' warning is not printed
    raw: the image is converted to RGBA before anything else reads it."""
    import warnings

    from pipeline.imagedata.images import inspect_image

    image = Image.new("P", (16, 16))
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.info["transparency"] = bytes([0, 255])
    image.save(tmp_path / "palette.png", transparency=bytes([0, 255]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        facts = inspect_image(tmp_path / "palette.png", perceptual=True)
    assert facts.problem is None and facts.transparency


def test_a_group_placed_apart_before_is_kept_together_where_most_of_it_was():
    """A group spread by `split.inseparable_groups: split` before (or joined only now by a new
    image) must not leak once it is a group again: its members follow the majority."""
    contents = pd.DataFrame(
        {
            "label": ["a"] * 8,
            "sha256": [f"{i}" for i in range(8)],
            "group": ["g", "g", "g", ""] + [""] * 4,
        }
    )
    previous = {("a", "0"): "train", ("a", "1"): "train", ("a", "2"): "test"}
    assignment = split_assignments(contents, FRACTIONS, 0, previous)
    assert {assignment[("a", d)] for d in "012"} == {"train"}


def test_a_conflict_with_an_image_of_a_given_test_split_leaves_out_the_training_copy(tmp_path):
    """The source's own test set stays whole (results are compared on it): of the same picture
    under two classes, the copy in the given training split is left out."""
    for split in ("train", "test"):
        for c, label in enumerate(["cat", "dog", "owl"]):
            for i in range(5):
                save_grey(
                    smooth(1000 * (split == "test") + 100 * c + i),
                    tmp_path / split / label / f"{i}.png",
                )
    Image.open(tmp_path / "test/cat/0.png").save(tmp_path / "train/dog/copy.jpg", quality=90)
    table = build_split(tmp_path, SplitSetup(split_params(), 0, 1), {}).set_index("raw_path")
    assert table.loc["test/cat/0.png", "status"] == mf.OK
    assert table.loc["test/cat/0.png", "split"] == "test"
    assert table.loc["train/dog/copy.jpg", "status"] == mf.CONFLICT
    assert table.loc["train/dog/copy.jpg", "reason"] == (
        "near duplicate of test/cat/0.png (class 'cat') under class 'dog'"
    )


def test_what_pillow_warns_of_is_logged_with_the_file(image_tree, monkeypatch, caplog):
    """A third-party warning goes through the stage's log with the file it concerns, not to
    standard error with no name."""
    import logging

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60 * 60)  # Pillow warns above, fails at 2x
    write_png(image_tree / "cat" / "big.png", 5, size=64)
    with caplog.at_level(logging.INFO, logger="pipeline.imagedata.assignment"):
        table = build_split(image_tree, SplitSetup(split_params(), 0, 1), {})
    assert table.set_index("raw_path").loc["cat/big.png", "status"] == mf.OK
    assert (
        "Pillow warned, reading 1 file(s) (cat/big.png): Image size (4096 pixels) exceeds limit "
        "of 3600 pixels, could be decompression bomb DOS attack." in caplog.text
    )


def test_a_class_whose_held_out_images_were_removed_says_to_re_split(image_tree):
    """The split's memory, not near duplicates, keeps the class from its shares: the message
    says so and what to do (deleting data/split, which the e2e advice test does)."""
    cfg = split_params()
    table = build_split(image_tree, SplitSetup(cfg, 0, 1), {})
    previous = dict(
        zip(zip(table["label"], table["sha256"], strict=True), table["split"], strict=True)
    )
    owl = table[(table["label"] == "owl") & (table["split"] != "train")]
    for raw_path in owl["raw_path"]:
        (image_tree / raw_path).unlink()
    with pytest.raises(SplitError) as stop:
        build_split(image_tree, SplitSetup(cfg, 0, 1), previous)
    message = str(stop.value)
    assert "class(es) whose images keep their last split" in message
    assert "'owl': 7 images in 0 near-duplicate group(s)" in message
    assert message.endswith("Delete data/split to re-split afresh (any image may then move)")
    assert (
        build_split(image_tree, SplitSetup(cfg, 0, 1), {})["split"].ne("").all()
    )  # afresh: placed
