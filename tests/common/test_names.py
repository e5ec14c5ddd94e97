"""common.names: a class name as part of an MLflow metric key or a file name."""

import pytest

from pipeline.common.names import dataset_name, metric_key, registered_model_name


def test_metric_keys_are_valid_mlflow_names():
    assert metric_key("Golden Retriever/2") == "Golden Retriever/2"
    assert metric_key("crème:brûlée") == "cr_me_br_l_e"


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
