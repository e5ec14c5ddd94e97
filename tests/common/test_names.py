"""common.names: a class name as part of an MLflow metric key or a file name."""

from pipeline.common.names import metric_key


def test_metric_keys_are_valid_mlflow_names():
    assert metric_key("Golden Retriever/2") == "Golden Retriever/2"
    assert metric_key("crème:brûlée") == "cr_me_br_l_e"
