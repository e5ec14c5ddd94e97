"""`make sweep`: the grid file and the params each of its points makes, checked before queueing."""

import pytest

from pipeline.tools.sweep import SweepError, grid_points, read_grid


def _grid(tmp_path, text: str):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return read_grid(path)


def test_every_combination_is_a_point_in_order(tmp_path, raw_params):
    grid = _grid(tmp_path, "train.epochs: [1, 2]\ntrain.model.convs_per_block: [1, [1, 2, 3]]\n")
    points = grid_points(grid, raw_params)
    assert points == [
        {"train.epochs": 1, "train.model.convs_per_block": 1},
        {"train.epochs": 1, "train.model.convs_per_block": [1, 2, 3]},
        {"train.epochs": 2, "train.model.convs_per_block": 1},
        {"train.epochs": 2, "train.model.convs_per_block": [1, 2, 3]},
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train.epochs: 3\n", "train.epochs needs a non-empty list of values, not 3"),
        ("train.epochs: []\n", "train.epochs needs a non-empty list of values"),
        ("- 1\n", "expected a mapping of params to lists of values"),
        ("train.epochs: [1\n", "not valid YAML"),
    ],
)
def test_a_malformed_grid_file_is_named(tmp_path, text, message):
    with pytest.raises(SweepError, match=message):
        _grid(tmp_path, text)


def test_a_missing_grid_file_is_named(tmp_path):
    with pytest.raises(SweepError, match=r"nothere.yaml: file not found"):
        read_grid(tmp_path / "nothere.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train.epoch: [1]\n", "unknown param train.epoch: params.yaml has no epoch under train"),
        ("nope.epochs: [1]\n", "unknown param nope.epochs: params.yaml has no nope"),
        ("train.epochs.x: [1]\n", "unknown param train.epochs.x: params.yaml has no train.epochs"),
        ("train.epochs: [2, 0]\n", r"train.epochs=0 has bad values:\n  train.epochs: Input"),
        ("train.distribute: [every]\n", "train.distribute=every has bad values"),
    ],
)
def test_a_point_that_makes_bad_params_stops_the_sweep_before_anything_is_queued(
    tmp_path, raw_params, text, message
):
    with pytest.raises(SweepError, match=message):
        grid_points(_grid(tmp_path, text), raw_params)
