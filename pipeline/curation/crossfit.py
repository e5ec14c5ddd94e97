"""Out-of-sample predicted probabilities for every image, by k-fold cross-fitting.

Each image's probabilities come from a model that never saw it: the images are cut into
`audit.folds` folds, stratified by class, with every near-duplicate group (and every set of
identical files) inside one fold so that no copy of an image teaches the model its label;
one small CNN (the pipeline's own family: batch-normalised 3x3 convolutions, max pooling, a
global-average head) is trained on all folds but one and predicts that one. The probabilities
are what cleanlab needs to tell a wrong label from a hard image (`curation.label_issues`).
"""

import logging
import time
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from pipeline.common.log import PipelineError
from pipeline.curation.settings import AuditSettings
from pipeline.params import ModelParams
from pipeline.training.model import build_model

log = logging.getLogger(__name__)


class CrossFitError(PipelineError, ValueError):
    """Too few images, or a class too small, for `audit.folds` folds."""


@dataclass(frozen=True)
class CrossFit:
    probabilities: np.ndarray  # (images, classes), each row from the model that did not see it
    fold: np.ndarray  # each image's fold
    folds: pd.DataFrame  # per fold: images held out, accuracy on them, seconds


def fold_ids(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each image's fold: stratified by label, every group in one fold."""
    smallest = int(np.bincount(labels).min()) if len(labels) else 0
    if len(labels) < 2 * folds or smallest < 2:
        raise CrossFitError(
            f"audit.folds = {folds} needs at least {2 * folds} images and 2 a class; the split "
            f"has {len(labels)} images, the smallest class {smallest}"
        )
    # the split's groups never mix classes (near duplicates are grouped within a class), so
    # stratifying the groups by their label stratifies the images: one pass of
    # StratifiedKFold, where StratifiedGroupKFold loops over every group in Python
    # (docs/benchmarks.md)
    _, first, member_of = np.unique(groups, return_index=True, return_inverse=True)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    group_fold = np.full(len(first), -1)
    for index, (_, held) in enumerate(splitter.split(np.zeros(len(first)), labels[first])):
        group_fold[held] = index
    return group_fold[member_of]


def small_cnn(shape: tuple[int, int, int], classes: int, filters: list[int]) -> keras.Model:
    """The audit's model: `build_model` with one batch-normalised convolution a block."""
    cfg = ModelParams(
        filters=filters,
        convs_per_block=1,
        kernel_size=3,
        padding="same",
        pool_size=2,
        pool="after_first_conv",
        dense_units=[],
        batch_norm=True,
        dropout=0.0,
        head="global_average",
        residual=False,
    )
    return build_model(shape, classes, cfg)


def _fit_fold(
    images: np.ndarray,
    labels: np.ndarray,
    train: np.ndarray,
    classes: int,
    settings: AuditSettings,
    seed: int,
) -> keras.Model:
    keras.utils.set_random_seed(seed)
    batch, epochs = settings.batch_size, settings.epochs
    model = small_cnn(images.shape[1:], classes, list(settings.filters))
    steps = max(1, -(-int(train.sum()) // batch))
    rate = keras.optimizers.schedules.CosineDecay(
        settings.learning_rate, decay_steps=steps * epochs
    )
    model.compile(optimizer=keras.optimizers.Adam(rate), loss="sparse_categorical_crossentropy")
    model.fit(images[train], labels[train], batch_size=batch, epochs=epochs, verbose=0)
    return model


def predict(model: keras.Model, images: np.ndarray, batch: int = 1024) -> np.ndarray:
    """The model's probabilities, called directly batch by batch: `model.predict` would trace
    a new function for every fold's model (and TensorFlow warn about it)."""
    parts = [
        model(images[start : start + batch], training=False)
        for start in range(0, len(images), batch)
    ]
    return np.concatenate([keras.ops.convert_to_numpy(part) for part in parts])


def cross_fit(
    images: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    classes: int,
    settings: AuditSettings,
    seed: int,
) -> CrossFit:
    """Probabilities for every image in `images` (uint8, N x H x W x C) from the fold model
    that did not see it (module docstring)."""
    fold = fold_ids(labels, groups, settings.folds, seed)
    probabilities = np.zeros((len(labels), classes), np.float32)
    rows = []
    for index in range(settings.folds):
        started = time.perf_counter()
        held = fold == index
        model = _fit_fold(images, labels, ~held, classes, settings, seed + index)
        probabilities[held] = predict(model, images[held])
        accuracy = float((probabilities[held].argmax(1) == labels[held]).mean())
        seconds = time.perf_counter() - started
        rows.append(
            {
                "fold": index,
                "images": int(held.sum()),
                "accuracy": accuracy,
                "seconds": round(seconds, 1),
            }
        )
        log.info(
            f"fold {index + 1}/{settings.folds}: {held.sum()} images held out, accuracy "
            f"{accuracy:.4f} against their given labels, {seconds:.0f} s"
        )
        keras.backend.clear_session()
    return CrossFit(probabilities, fold, pd.DataFrame(rows))
