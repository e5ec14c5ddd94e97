"""What evaluate and visualize add to the MLflow run of the model they looked at, and the
registry alias that follows the test results."""

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from pipeline.common.names import metric_key
from pipeline.paths import ROOT
from pipeline.tracking import promotion, store
from pipeline.tracking.runs import log_folder, log_sections


@dataclass(frozen=True)
class EvaluationFiles:
    folder: Path  # every file under it goes to the run, in the same folder
    compared: tuple[Path, ...]  # also at the run's top level, where the compare view shows them
    beside: tuple[Path, ...] = ()  # other stages' reports, each in its own folder


@dataclass(frozen=True)
class EvaluationResults:
    """What an evaluation adds to the run: the headline metrics, the per-class table, the
    confusion matrix, and that matrix as plain text."""

    metrics: dict
    per_class: pd.DataFrame
    counts: pd.DataFrame
    confusion_text: str


def log_evaluation(
    run_id: str,
    raw_params: Mapping,
    result: EvaluationResults,
    files: EvaluationFiles,
    promotion_rule: tuple[str, str],
) -> promotion.Decision:
    """Add the test results to the model's run (its status stays the training's:
    `store.added_to_run`), then let the registry alias follow them: `promotion_rule` is
    (registered model name, metric that decides)."""
    name, metric = promotion_rule
    metrics, per_class, counts = result.metrics, result.per_class, result.counts
    store.configure()
    with store.added_to_run(run_id, "evaluate") as client:
        # the audit's section too: the suspects these results count come from it
        log_sections(raw_params, ("evaluate", "audit"), run_id)
        flat = {f"test_{k}": v for k, v in metrics.items() if not isinstance(v, dict)}
        for row in per_class.itertuples(index=False):
            key = metric_key(row[0])
            flat |= {
                f"test_f1_{key}": row.f1,
                f"test_precision_{key}": row.precision,
                f"test_recall_{key}": row.recall,
            }
        log_metrics(client, run_id, flat)
        log_folder(files.folder, files.folder.relative_to(ROOT).as_posix(), run_id)
        for path in files.beside:
            client.log_artifact(run_id, str(path), path.parent.relative_to(ROOT).as_posix())
        # MLflow's run comparison previews, side by side, only the files at the top of the
        # runs' artifacts: the ones worth comparing between two models go there as well.
        # A wide CSV shows three columns there, so the matrix also goes as plain text.
        for path in files.compared:
            client.log_artifact(run_id, str(path))
        client.log_text(run_id, result.confusion_text, "confusion_matrix.txt")
        long_form = counts.stack().rename("count").reset_index()
        long_form.columns = ["true", "predicted", "count"]
        client.log_table(
            run_id, long_form, artifact_file="reports/evaluate/confusion_matrix_table.json"
        )
        # one pipeline at a time reads and moves the alias (on SQLite; see promotion.py)
        with store.store_lock(mlflow.get_tracking_uri()):
            decision = promotion.promote(client, name, run_id, metric, metrics[metric])
        for key, value in decision.tags(metric).items():
            client.set_tag(run_id, key, value)
        if decision.champion_value is not None:
            log_metrics(
                client, run_id, {f"champion_previous_test_{metric}": decision.champion_value}
            )
    return decision


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float]) -> None:
    """Metrics at step 0 on a run that is not the active one, in one call."""
    now = int(time.time() * 1000)
    batch = [Metric(key, float(value), now, 0) for key, value in metrics.items()]
    client.log_batch(run_id, metrics=batch)


def log_visualization(run_id: str, raw_params: Mapping, metrics: dict, folder: Path) -> None:
    """Add the look inside the CNN to the model's run (its status stays the training's):
    its numbers and every picture."""
    store.configure()
    with store.added_to_run(run_id, "visualize") as client:
        log_sections(raw_params, ("visualize",), run_id)
        flat = {f"visualize_{k}": v for k, v in metrics.items() if isinstance(v, int | float)}
        flat |= {f"weight_sharing_{k}": v for k, v in metrics.get("weight_sharing", {}).items()}
        log_metrics(client, run_id, flat)
        log_folder(folder, folder.relative_to(ROOT).as_posix(), run_id)


def log_export(
    run_id: str, raw_params: Mapping, table: pd.DataFrame, parity_file: Path, exported: Path
) -> None:
    """Add the exported models and their parity table to the model's run (its status stays
    the training's): `export_<format>_<column>` metrics, the table, and every exported file
    under `export/`."""
    store.configure()
    with store.added_to_run(run_id, "export") as client:
        log_sections(raw_params, ("export",), run_id)
        columns = [c for c in table.columns if c != "format"]
        flat = {
            f"export_{row['format']}_{column}": row[column]
            for row in table.to_dict("records")
            for column in columns
        }
        log_metrics(client, run_id, flat)
        client.log_artifact(
            run_id, str(parity_file), parity_file.parent.relative_to(ROOT).as_posix()
        )
        log_folder(exported, "export", run_id)


def run_tags(run_id: str) -> dict[str, str]:
    """The tags of a run (what its training recorded: git.commit, data.*, env.*)."""
    store.configure()
    return dict(MlflowClient().get_run(run_id).data.tags)


def log_card(run_id: str, raw_params: Mapping, card: Path, description: str) -> None:
    """The model card as an artifact of the model's run, and `description` (the card, short
    enough for a tag) as the run's description."""
    store.configure()
    with store.added_to_run(run_id, "card") as client:
        log_sections(raw_params, ("card",), run_id)
        client.log_artifact(run_id, str(card))
        client.set_tag(run_id, "mlflow.note.content", description)
