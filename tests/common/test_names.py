"""common.names: a class name as part of an MLflow metric key or a file name."""

import re

import pytest

from pipeline.common.names import dataset_name, metric_key, registered_model_name


def test_metric_keys_are_valid_mlflow_names():
    assert metric_key("Golden Retriever 2.0") == "Golden Retriever 2.0"
    assert metric_key("crème:brûlée").startswith("cr_me_br_l_e-")


def test_classes_in_other_scripts_keep_distinct_keys_and_file_names():
    """Cyrillic and Chinese class names, all of whose letters are replaced: each keeps a key
    of its own (a digest of the name), which is also a safe file name."""
    names = ["Кошка", "Собака", "猫", "狗", "Ко_ка", "cat"]
    keys = [metric_key(name) for name in names]
    assert len(set(keys)) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9_\-. ]+", key) for key in keys)
    assert keys[-1] == "cat" and keys[0] == f"_____-{keys[0][-8:]}"


@pytest.mark.parametrize(
    ("source", "classes", "name"),
    [
        ("digits", [], "image-classifier-digits"),
        ("fashion-mnist", [], "image-classifier-fashion-mnist"),
        ("/data/My Photos", [], "image-classifier-my-photos"),
        ("shared/labels.csv", [], "image-classifier-labels"),
        ("digits", ["7", "5"], "image-classifier-digits-5-7"),
    ],
)
def test_auto_names_one_registered_model_per_dataset(source, classes, name):
    assert registered_model_name("auto", source, classes) == name
    assert registered_model_name("mine", source, classes) == "mine"  # a name is kept


def test_many_classes_are_named_by_a_stable_digest():
    classes = [f"class number {i}" for i in range(20)]
    name = dataset_name("digits", classes)
    assert name == dataset_name("digits", classes[::-1]) and len(name) == len("digits-") + 10


def test_the_params_name_the_registered_model(raw_params):
    from pipeline.params import parse_params

    assert parse_params(raw_params).registered_model == "image-classifier-digits"
    raw_params["ingest"]["source"] = "fashion-mnist"
    assert parse_params(raw_params).registered_model == "image-classifier-fashion-mnist"
