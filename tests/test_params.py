import pytest

from pipeline.params import ParamsError, load_params, parse_params, set_param
from pipeline.tools.recipes import ARTICLE


def test_project_params_are_valid():
    params = load_params()
    assert params.split.fractions["train"] == pytest.approx(0.7)
    assert params.train.model.filters == [64, 128, 256]
    assert params.train.model.convs == [1, 2, 2]
    # 'same' 3x3 convolutions: three poolings take 28x28 Fashion-MNIST to 3x3, 16 to 2x2
    assert params.train.model.output_size(28) == 3
    assert params.train.model.min_input_size() == 8
    assert params.train.model.min_input_size(last_map=2) == 16


def test_the_article_recipe_is_the_seed_network(raw_params):
    for key, value in ARTICLE.items():
        set_param(raw_params, key, value)
    model = parse_params(raw_params).train.model
    assert model.convs == [2, 2, 2, 2] and model.output_size(64) == 2  # 2x2 at 64 px


def test_convs_per_block_counts_one_per_block_or_one_for_all(raw_params):
    raw_params["train"]["model"].update(filters=[8, 16], convs_per_block=[1, 2, 3])
    with pytest.raises(ParamsError, match="convs_per_block has 3 entries for 2 blocks"):
        parse_params(raw_params)


def test_residual_shortcuts_need_same_padding(raw_params):
    raw_params["train"]["model"].update(padding="valid", residual=True)
    with pytest.raises(ParamsError, match="residual: true needs padding: same"):
        parse_params(raw_params)


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
    raw_params["base"]["image_size"] = 8  # four poolings need 16
    raw_params["train"]["model"].update(filters=[8, 16, 32, 64], convs_per_block=1)
    with pytest.raises(ParamsError, match=r"base\.image_size = 8 is too small for train\.model"):
        parse_params(raw_params)


def test_missing_section_is_named(raw_params):
    del raw_params["evaluate"]
    with pytest.raises(ParamsError, match=r"evaluate: Field required"):
        parse_params(raw_params)


def test_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "params.yaml")


NUMBER, WHOLE, FINITE = "a valid number", "a valid integer", "a finite number"
WRONG_TYPES = [
    ("train", "label_smoothing", "0.1", rf"train\.label_smoothing: Input should be {NUMBER}"),
    ("train", "label_smoothing", float("nan"), rf"train\.label_smoothing: .* be {FINITE}"),
    ("split", "validation", float("inf"), rf"split\.validation: Input should be {FINITE}"),
    ("base", "seed", "42", rf"base\.seed: Input should be {WHOLE}"),
    ("base", "seed", True, rf"base\.seed: Input should be {WHOLE}"),
    ("split", "background", ["255", 255, 255], rf"split\.background\.0: .* be {WHOLE}"),
    ("train", "registered_model", "..", r"registered_model: .*'\.\.' is not a name MLflow"),
    ("train", "registered_model", "my:model", r"registered_model: String should match"),
]


@pytest.mark.parametrize(("section", "key", "value", "message"), WRONG_TYPES)
def test_values_of_the_wrong_type_are_refused_naming_the_key(
    raw_params, section, key, value, message
):
    """Strict: no quoted number, boolean, NaN or infinity passes for a number."""
    raw_params[section][key] = value
    with pytest.raises(ParamsError, match=message):
        parse_params(raw_params)


def test_a_key_given_twice_in_params_yaml_is_an_error_naming_it(tmp_path):
    from pipeline.params import load_params

    path = tmp_path / "params.yaml"
    path.write_text("base:\n  seed: 1\n  seed: 2\n")
    with pytest.raises(ParamsError, match=r"not valid YAML: .*key 'seed' appears twice \(first "):
        load_params(path)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("folds", 1, r"audit\.folds: Input should be greater than or equal to 2"),
        ("epochs", "many", r"audit\.epochs: Input should be 'auto' or .*"),
        ("image_size", 4, r"audit\.image_size: Input should be 'auto' or .*"),
        ("image_size", 8, r"image_size = 8 is too small for 4 blocks .* takes 16 or more"),
        ("filter_by", "loss", r"audit\.filter_by: Input should be 'prune_by_noise_rate'"),
        ("rank_by", "loss", r"audit\.rank_by: Input should be 'self_confidence'"),
        ("image_checks", ["dark", "sharp"], r"audit\.image_checks\.1: Input should be 'dark'"),
        ("image_checks", ["dark", "dark"], r"image_checks names a check twice"),
        ("review_size", 0, r"audit\.review_size: Input should be greater than or equal to 1"),
    ],
)
def test_bad_audit_params_are_refused_naming_the_key(raw_params, key, value, message):
    raw_params["audit"][key] = value
    if key == "image_size" and value == 8:
        raw_params["audit"]["filters"] = [8, 8, 8, 8]
    with pytest.raises(ParamsError, match=message):
        parse_params(raw_params)


def test_an_export_format_given_twice_or_unknown_is_named(raw_params):
    raw_params["export"]["formats"] = ["onnx", "onnx"]
    with pytest.raises(ParamsError, match="export: Value error, formats names a format twice"):
        parse_params(raw_params)
    raw_params["export"]["formats"] = ["onnx", "coreml"]
    with pytest.raises(ParamsError, match=r"export\.formats\.1: Input should be 'onnx'"):
        parse_params(raw_params)


def test_a_transfer_base_on_grayscale_says_to_set_three_channels_and_that_works(raw_params):
    raw_params["train"]["transfer"]["base"] = "mobilenet_v2"
    raw_params["base"].update(channels=1, image_size=32)
    with pytest.raises(ParamsError, match=r"set base\.channels: 3"):
        parse_params(raw_params)
    raw_params["base"]["channels"] = 3  # as told
    assert parse_params(raw_params).base.channels == 3


def test_the_split_size_bounds_must_be_in_order(raw_params):
    raw_params["split"].update(min_image_size=64, max_image_size=32)
    with pytest.raises(ParamsError, match="min_image_size = 64 is above max_image_size = 32"):
        parse_params(raw_params)
