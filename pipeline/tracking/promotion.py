"""The registry alias `champion`: it moves to a newly evaluated model version only when that
version beats the current champion on the chosen test metric, so
`models:/<name>@champion` always names the best validated model.

Reading the champion and moving the alias is not one transaction in MLflow's API: evaluate
holds the SQLite store's file lock around it. Against a shared server, two evaluations that
finish in the same instant can both read the old champion; the later write wins.
"""

from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.evaluation.direction import beats

ALIAS = "champion"


@dataclass(frozen=True)
class Decision:
    promoted: bool
    version: str
    value: float
    champion_version: str | None  # the champion before this decision
    champion_value: float | None
    reason: str

    def tags(self, metric: str) -> dict[str, str]:
        return {
            "champion.decision": "promoted" if self.promoted else "kept",
            "champion.metric": f"test_{metric}",
            "champion.previous_version": self.champion_version or "none",
            "champion.previous_value": "none"
            if self.champion_value is None
            else repr(self.champion_value),
            "champion.reason": self.reason,
        }


def run_version(client: MlflowClient, name: str, run_id: str) -> str:
    """The registered version of `name` that `run_id` created (its newest, if several)."""
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if not versions:
        raise LookupError(f"run {run_id} registered no version of model {name!r}")
    return str(max(versions, key=lambda v: int(v.version)).version)


# run tags that say what a model learnt; only models alike in both compete (train sets them)
DATA_TAGS = {"dataset": "another dataset", "classes": "other classes"}


def different_data(champion: dict[str, str], candidate: dict[str, str]) -> str:
    """How the champion's data (its run tags) differs from the candidate's; "" if alike."""
    for tag, what in DATA_TAGS.items():
        if champion.get(tag) != candidate.get(tag):
            return f"{what} ({tag} {champion.get(tag)!r}, this model {candidate.get(tag)!r})"
    return ""


def promote(client: MlflowClient, name: str, run_id: str, metric: str, value: float) -> Decision:
    """Move `champion` to this run's version of `name` if its `test_<metric>` beats the
    champion's (a higher score, or a lower loss); keep it otherwise. A champion that learnt
    other data (another dataset or other classes: DATA_TAGS) is no rival: the alias moves."""
    version = run_version(client, name, run_id)
    try:
        champion = client.get_model_version_by_alias(name, ALIAS)
    except MlflowException:
        champion = None
    if champion is None:
        client.set_registered_model_alias(name, ALIAS, version)
        return Decision(True, version, value, None, None, "no champion yet")
    held = str(champion.version)
    if held == version:
        return Decision(True, version, value, version, value, "already the champion")
    champion_run = client.get_run(champion.run_id)
    unlike = different_data(champion_run.data.tags, client.get_run(run_id).data.tags)
    if unlike:
        client.set_registered_model_alias(name, ALIAS, version)
        reason = f"the champion (version {held}) learnt {unlike}: no comparable champion"
        return Decision(True, version, value, held, None, reason)
    previous = champion_run.data.metrics.get(f"test_{metric}")
    if previous is None:
        client.set_registered_model_alias(name, ALIAS, version)
        reason = f"the champion (version {held}) has no test_{metric}"
        return Decision(True, version, value, held, None, reason)
    if beats(value, previous, metric):
        client.set_registered_model_alias(name, ALIAS, version)
        reason = f"test_{metric} {value:.6g} beats {previous:.6g}"
        return Decision(True, version, value, held, previous, reason)
    reason = f"test_{metric} {value:.6g} does not beat {previous:.6g}"
    return Decision(False, version, value, held, previous, reason)
