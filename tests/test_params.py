import pytest

from pipeline.params import ParamsError, load_params, parse_params


def test_project_params_are_valid():
    params = load_params()
    assert params.split.fractions["train"] == pytest.approx(0.7)
    assert params.train.model.filters == [12, 25, 50, 100]


def test_seed_architecture_leaves_a_2x2_feature_map_at_64px():
    assert load_params().train.model.output_size(64) == 2


def test_unknown_key_is_named(raw_params):
    raw_params["train"]["epochz"] = 3
    with pytest.raises(ParamsError, match=r"train\.epochz: Extra inputs are not permitted"):
        parse_params(raw_params)


def test_wrong_type_is_named(raw_params):
    raw_params["train"]["batch_size"] = "twenty"
    message = r"train\.batch_size: Input should be 'auto' or Input should be a valid integer"
    with pytest.raises(ParamsError, match=message):
        parse_params(raw_params)


def test_fractions_must_leave_training_data(raw_params):
    raw_params["split"].update(validation=0.5, test=0.5)
    with pytest.raises(ParamsError, match=r"split: Value error, validation \+ test = 1 must stay"):
        parse_params(raw_params)


def test_image_too_small_for_architecture_names_the_key(raw_params):
    raw_params["base"]["image_size"] = 16
    with pytest.raises(ParamsError, match=r"base\.image_size = 16 is too small for train\.model"):
        parse_params(raw_params)


def test_missing_section_is_named(raw_params):
    del raw_params["evaluate"]
    with pytest.raises(ParamsError, match=r"evaluate: Field required"):
        parse_params(raw_params)


def test_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "params.yaml")
