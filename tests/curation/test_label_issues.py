"""Planted label mistakes in a tiny dataset are found: k-fold cross-fitting, then cleanlab."""

import numpy as np
import pandas as pd
import pytest

from pipeline.curation.crossfit import CrossFitError, cross_fit, fold_ids
from pipeline.curation.label_issues import (
    SUSPECT_COLUMNS,
    found_against,
    pair_counts,
    read_suspects,
    relabel_line,
    suspects_table,
)
from pipeline.curation.settings import audit_image_size, resolve_audit
from pipeline.imagedata.relabels import read_relabels
from pipeline.params import load_params

SIZE, PER_CLASS = 12, 30


def patterns(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three classes anyone can tell apart (a bright top half, left half or centre), with
    noise: uint8 (90, 12, 12, 1) and their labels."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(3):
        for _ in range(PER_CLASS):
            image = rng.integers(0, 60, (SIZE, SIZE))
            if label == 0:
                image[: SIZE // 2] += 190
            elif label == 1:
                image[:, : SIZE // 2] += 190
            else:
                image[3:9, 3:9] += 190
            images.append(image)
            labels.append(label)
    return np.array(images, np.uint8)[..., None], np.array(labels)


@pytest.fixture
def cfg():
    return load_params().audit.model_copy(
        update={"folds": 3, "epochs": 100, "batch_size": 8, "filters": [8, 16]}
    )


def settings_of(cfg, images: np.ndarray):
    """The audit's settings for these square images, as the stage resolves them."""
    return resolve_audit(cfg, pd.Series([images.shape[1]] * len(images)), bf16=False)


def test_planted_flips_are_found_and_ranked_first(cfg):
    images, labels = patterns()
    flipped = np.array([4, 37, 71])  # one image of each class, given the next class's label
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + 1) % 3
    rows = pd.DataFrame({"raw_path": [f"{c}/{i}.png" for i, c in enumerate(noisy)]})
    rows = rows.assign(path=rows["raw_path"], split="train")
    fit = cross_fit(images, noisy, np.arange(len(noisy)), 3, settings_of(cfg, images), seed=0)
    assert (fit.probabilities.argmax(1) == labels).mean() > 0.95  # it learnt the true classes
    suspects = suspects_table(rows, noisy, fit.probabilities, ["a", "b", "c"], cfg)
    assert list(suspects.columns) == SUSPECT_COLUMNS
    scores = found_against(suspects, set(rows["raw_path"].iloc[flipped]), len(rows))
    assert scores["recall"] == 1.0
    assert scores["precision"] >= 0.5
    top = suspects.head(3).set_index("raw_path")
    assert set(top.index) == set(rows["raw_path"].iloc[flipped])
    # each suggestion is the true class, with the line that accepts it
    for index in flipped:
        path = rows["raw_path"].iloc[index]
        assert top.loc[path, "suggested_label"] == "abc"[labels[index]]
        assert top.loc[path, "relabel"].startswith(f"{path},{'abc'[labels[index]]},")
    assert pair_counts(suspects)["suspects"].sum() == len(suspects)


def test_the_same_data_and_seed_give_the_same_probabilities(cfg):
    images, labels = patterns()
    cfg = cfg.model_copy(update={"epochs": 2})
    settings = settings_of(cfg, images)
    first = cross_fit(images, labels, np.arange(len(labels)), 3, settings, seed=1)
    second = cross_fit(images, labels, np.arange(len(labels)), 3, settings, seed=1)
    np.testing.assert_array_equal(first.probabilities, second.probabilities)


def test_a_group_of_near_duplicates_stays_in_one_fold():
    labels = np.repeat([0, 1], 20)
    groups = np.arange(40)
    groups[[0, 1, 2, 3]] = 0  # four copies of one image
    folds = fold_ids(labels, groups, 4, seed=0)
    assert len(set(folds[[0, 1, 2, 3]])) == 1
    assert sorted(set(folds)) == [0, 1, 2, 3]


def test_too_few_images_for_the_folds_is_named():
    with pytest.raises(
        CrossFitError,
        match=r"audit\.folds = 5 needs at least 10 images and 2 "
        r"a class; the split has 6 images, the smallest class 3",
    ):
        fold_ids(np.array([0, 0, 0, 1, 1, 1]), np.arange(6), 5, seed=0)


def test_image_size_auto_is_the_median_shorter_side_within_bounds():
    assert audit_image_size("auto", pd.Series([8, 8, 9])) == 8
    assert audit_image_size("auto", pd.Series([28] * 3)) == 28
    assert audit_image_size("auto", pd.Series([300, 500])) == 32
    assert audit_image_size(20, pd.Series([300])) == 20


def test_the_audit_resolves_every_auto_into_plain_values():
    """The digits' 1,797 placed 8x8 images under the default audit params."""
    cfg = load_params().audit
    assert {cfg.image_size, cfg.batch_size, cfg.epochs, cfg.precision} == {"auto"}
    settings = resolve_audit(cfg, pd.Series([8] * 1797), bf16=False)
    # 1,198 images a fold model: batch 20, 60 steps an epoch, 2,200 steps wanted: 37 epochs
    assert (settings.image_size, settings.batch_size, settings.epochs) == (8, 20, 37)
    assert settings.precision == "float32"
    assert resolve_audit(cfg, pd.Series([8] * 1797), bf16=True).precision == "mixed_bfloat16"
    # Fashion-MNIST's 69,930 placed: batch 128, 364 steps; 160,000 images cap it at 3 epochs
    fashion = resolve_audit(cfg, pd.Series([28] * 69_930), bf16=False)
    assert (fashion.image_size, fashion.batch_size, fashion.epochs) == (28, 128, 3)
    fixed = cfg.model_copy(update={"epochs": 5, "batch_size": 64, "precision": "float32"})
    assert (resolve_audit(fixed, pd.Series([8] * 100), bf16=True).epochs) == 5


def test_a_relabel_line_is_a_row_relabels_csv_reads_back(tmp_path):
    line = relabel_line('odd, "name".png', "dog", "audit: p(dog)=0.91, p(given)=0.02")
    (tmp_path / "relabels.csv").write_text("path,label,reason\n" + line + "\n")
    assert read_relabels(tmp_path / "relabels.csv").to_dict("records") == [
        {"path": 'odd, "name".png', "label": "dog", "reason": "audit: p(dog)=0.91, p(given)=0.02"}
    ]


def test_reading_suspects_without_the_audit_names_the_stage(tmp_path):
    with pytest.raises(Exception, match=r"suspects\.csv is missing: run `dvc repro audit`"):
        read_suspects(tmp_path / "suspects.csv")
