"""The `champion` alias follows the best validated model, and only that."""

import pytest
from mlflow.tracking import MlflowClient

from pipeline.tracking import promotion

NAME = "classifier"


@pytest.fixture
def client(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model(NAME)
    return client


def version_for(client: MlflowClient, tmp_path, metrics: dict[str, float]) -> str:
    """A run with these test metrics and the model version it registered."""
    experiment = client.get_experiment_by_name("Default").experiment_id
    run = client.create_run(experiment)
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, f"test_{key}", value)
    client.set_terminated(run.info.run_id)
    (tmp_path / "model").mkdir(exist_ok=True)
    client.create_model_version(NAME, (tmp_path / "model").as_uri(), run.info.run_id)
    return run.info.run_id


def champion(client: MlflowClient) -> str:
    return str(client.get_model_version_by_alias(NAME, promotion.ALIAS).version)


def test_the_first_model_becomes_champion_and_only_a_better_one_replaces_it(client, tmp_path):
    first = version_for(client, tmp_path, {"macro_f1": 0.90})
    decision = promotion.promote(client, NAME, first, "macro_f1", 0.90)
    assert decision.promoted and decision.reason == "no champion yet" and champion(client) == "1"

    worse = version_for(client, tmp_path, {"macro_f1": 0.85})
    decision = promotion.promote(client, NAME, worse, "macro_f1", 0.85)
    assert not decision.promoted and champion(client) == "1"
    assert decision.champion_version == "1" and decision.champion_value == 0.90
    assert decision.reason == "test_macro_f1 0.85 does not beat 0.9"
    assert decision.tags("macro_f1")["champion.decision"] == "kept"

    tie = version_for(client, tmp_path, {"macro_f1": 0.90})
    assert not promotion.promote(client, NAME, tie, "macro_f1", 0.90).promoted  # a tie keeps

    better = version_for(client, tmp_path, {"macro_f1": 0.95})
    decision = promotion.promote(client, NAME, better, "macro_f1", 0.95)
    assert decision.promoted and champion(client) == "4"
    assert decision.tags("macro_f1")["champion.previous_version"] == "1"
    assert client.get_model_version_by_alias(NAME, promotion.ALIAS).run_id == better

    again = promotion.promote(client, NAME, better, "macro_f1", 0.95)  # evaluate re-run
    assert again.promoted and again.reason == "already the champion" and champion(client) == "4"


def test_losses_promote_downwards(client, tmp_path):
    first = version_for(client, tmp_path, {"log_loss": 0.30})
    promotion.promote(client, NAME, first, "log_loss", 0.30)
    lower = version_for(client, tmp_path, {"log_loss": 0.20})
    assert promotion.promote(client, NAME, lower, "log_loss", 0.20).promoted
    higher = version_for(client, tmp_path, {"log_loss": 0.25})
    assert not promotion.promote(client, NAME, higher, "log_loss", 0.25).promoted
    assert champion(client) == "2"


def test_a_champion_without_the_metric_is_replaced_and_a_run_without_a_version_named(
    client, tmp_path
):
    old = version_for(client, tmp_path, {"accuracy": 0.99})
    promotion.promote(client, NAME, old, "accuracy", 0.99)
    new = version_for(client, tmp_path, {"macro_f1": 0.5})
    decision = promotion.promote(client, NAME, new, "macro_f1", 0.5)
    assert decision.promoted and decision.reason == "the champion (version 1) has no test_macro_f1"
    with pytest.raises(LookupError, match="run nope registered no version of model 'classifier'"):
        promotion.promote(client, NAME, "nope", "macro_f1", 0.5)


def tagged(client: MlflowClient, tmp_path, value: float, **tags: str) -> str:
    run_id = version_for(client, tmp_path, {"macro_f1": value})
    for key, tag in tags.items():
        client.set_tag(run_id, key, tag)
    return run_id


def test_only_a_champion_of_the_same_dataset_and_classes_is_a_rival(client, tmp_path):
    digits = tagged(client, tmp_path, 0.99, dataset="digits", classes="0,1,2")
    assert promotion.promote(client, NAME, digits, "macro_f1", 0.99).promoted

    fashion = tagged(client, tmp_path, 0.90, dataset="fashion-mnist", classes="0,1,2")
    decision = promotion.promote(client, NAME, fashion, "macro_f1", 0.90)
    assert decision.promoted and champion(client) == "2"
    assert decision.reason == (
        "the champion (version 1) learnt another dataset (dataset 'digits', this model "
        "'fashion-mnist'): no comparable champion"
    )
    more = tagged(client, tmp_path, 0.80, dataset="fashion-mnist", classes="0,1,2,3")
    decision = promotion.promote(client, NAME, more, "macro_f1", 0.80)
    assert decision.promoted and "learnt other classes (classes '0,1,2'" in decision.reason

    worse = tagged(client, tmp_path, 0.70, dataset="fashion-mnist", classes="0,1,2,3")
    assert not promotion.promote(client, NAME, worse, "macro_f1", 0.70).promoted  # a rival
