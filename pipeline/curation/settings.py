"""Every `auto` of the audit (params.yaml's `audit:` section) resolved once, from the split
and the machine, into `AuditSettings`: plain values the cross-fitting takes (`resolve_audit`).

- image_size auto: the images' median shorter side, kept in AUTO_MIN_SIZE..AUTO_MAX_SIZE
  (small enough for a fast model, large enough for two blocks of pooling).
- batch_size auto: the training's rule (`training.batching`), for the images of all folds
  but one.
- epochs auto: about AUTO_STEPS steps for each fold's model, or as many as show it AUTO_IMAGES
  images when that is fewer, in AUTO_MIN_EPOCHS to AUTO_MAX_EPOCHS epochs. Steps are what a
  small dataset lacks (batch normalisation's moving statistics need a few hundred before the
  model predicts well in inference mode); on a large one, passes over the data stop adding
  suspects long before (docs/fixing-labels.md has the measurements).
- precision auto: mixed_bfloat16 on a CPU that computes it natively, else float32.
"""

from dataclasses import dataclass

import pandas as pd

from pipeline.params import AUTO, AuditParams
from pipeline.training.batching import resolve_batch_size

AUTO_STEPS = 2200
AUTO_IMAGES = 160_000
AUTO_MIN_EPOCHS, AUTO_MAX_EPOCHS = 3, 300
AUTO_MIN_SIZE, AUTO_MAX_SIZE = 8, 32


@dataclass(frozen=True)
class AuditSettings:
    """The audit's fold models as they train: every auto resolved (`resolve_audit`)."""

    folds: int
    filters: tuple[int, ...]
    learning_rate: float
    image_size: int
    batch_size: int
    epochs: int
    precision: str  # a Keras dtype policy


def audit_image_size(setting: int | str, shorter_sides: pd.Series) -> int:
    """`audit.image_size` for images of these shorter sides (module docstring)."""
    if setting != AUTO:
        return int(setting)
    median = int(shorter_sides.median()) if len(shorter_sides) else AUTO_MIN_SIZE
    return min(AUTO_MAX_SIZE, max(AUTO_MIN_SIZE, median))


def resolve_audit(cfg: AuditParams, shorter_sides: pd.Series, bf16: bool) -> AuditSettings:
    """The audit's settings for the placed images of these shorter sides (one per image) on
    a CPU that does (`bf16`) or does not compute bfloat16 natively."""
    images = len(shorter_sides)
    batch = resolve_batch_size(cfg.batch_size, int(images * (cfg.folds - 1) / cfg.folds))
    steps = max(1, round(images * (cfg.folds - 1) / cfg.folds / batch))
    epochs = cfg.epochs
    if epochs == AUTO:
        wanted = min(AUTO_STEPS, AUTO_IMAGES / batch)
        epochs = min(AUTO_MAX_EPOCHS, max(AUTO_MIN_EPOCHS, round(wanted / steps)))
    precision = cfg.precision
    if precision == AUTO:
        precision = "mixed_bfloat16" if bf16 else "float32"
    return AuditSettings(
        folds=cfg.folds,
        filters=tuple(cfg.filters),
        learning_rate=cfg.learning_rate,
        image_size=audit_image_size(cfg.image_size, shorter_sides),
        batch_size=batch,
        epochs=int(epochs),
        precision=precision,
    )
