"""Named training recipes as params overrides (dotted keys of `params.yaml`), to set beside
the default in `dvc exp run -S key=value ...` and in `make bench-recipe`.

`article`: the seed article's exact setup (its CNN of 2x2 'valid' convolutions and a dense
head, 64x64 RGB input, batch 20, Adam with the per-step inverse-time decay, no label
smoothing, weight decay or batch normalisation), with the project's augmentation of that time.
"""

ARTICLE: dict[str, object] = {
    "base.image_size": 64,
    "base.channels": 3,
    "train.batch_size": 20,
    "train.label_smoothing": 0.0,
    "train.optimizer.learning_rate": 0.001,
    "train.optimizer.schedule": "inverse_time",
    "train.optimizer.weight_decay": 0.0,
    "train.augmentation.rotation": 0.05,
    "train.augmentation.zoom": 0.1,
    "train.augmentation.translation": 0.1,
    "train.augmentation.erasing": 0.0,
    "train.model.filters": [12, 25, 50, 100],
    "train.model.convs_per_block": 2,
    "train.model.kernel_size": 2,
    "train.model.padding": "valid",
    "train.model.dense_units": [750, 250],
    "train.model.batch_norm": False,
    "train.model.head": "flatten",
    "train.model.residual": False,
    "train.model.pool": "after_block",
    "train.test_time_views": "none",
}

RECIPES = {"article": ARTICLE}


def yaml_value(value: object) -> str:
    """A value as `dvc exp run -S` takes it (YAML): [12, 25], false, inverse_time."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(yaml_value(v) for v in value) + "]"
    return str(value)


def exp_run_command(recipe: str) -> str:
    """The `dvc exp run` line that trains `recipe` (docs/training.md shows it)."""
    settings = " ".join(f"-S {key}={yaml_value(v)}" for key, v in RECIPES[recipe].items())
    return f"dvc exp run {settings}"
