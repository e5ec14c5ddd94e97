"""Which `tf.distribute` strategy trains the model, with what batch and learning rate, and
which process may write.

`train.distribute` (resolved by `training.settings.resolve_distribute`) names the strategy:
MultiWorkerMirroredStrategy, MirroredStrategy or the default (one device) one. Every worker
runs the same `python -m pipeline.train`; only the chief (task `chief`, or worker 0 when the
cluster names none) writes the model, the reports and the MLflow run.
"""

import json
import math
import os
from dataclasses import dataclass

import tensorflow as tf
from keras import tree

from pipeline.common.log import PipelineError
from pipeline.params import TrainParams


class DistributeError(PipelineError, ValueError):
    """A strategy this machine or cluster cannot run, or a batch it cannot split."""


@dataclass(frozen=True)
class Cluster:
    """This process's place in the cluster `TF_CONFIG` describes (one task: no cluster)."""

    tasks: int
    task_type: str
    task_index: int
    has_chief: bool = False  # a task of type `chief`; otherwise worker 0 is the chief

    @property
    def is_chief(self) -> bool:
        if self.has_chief:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0


def read_cluster(tf_config: str | None) -> Cluster:
    """The cluster in `TF_CONFIG` (JSON: `cluster` = {task type: [host:port, ...]}, `task` =
    {type, index}); a missing or single-task one is a cluster of one."""
    if not tf_config:
        return Cluster(1, "worker", 0)
    try:
        config = json.loads(tf_config)
        tasks = sum(len(hosts) for kind, hosts in config["cluster"].items() if kind != "evaluator")
        task = config["task"]
        return Cluster(tasks, str(task["type"]), int(task["index"]), "chief" in config["cluster"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DistributeError(
            f"TF_CONFIG is not a cluster description ({type(error).__name__}: {error}); "
            'expected {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", '
            '"index": 0}}'
        ) from error


def batch_sizes(batch_size: int, scope: str, replicas: int) -> tuple[int, int]:
    """(global, per replica) batch size for `train.batch_size` counted per `scope`."""
    if scope == "replica":
        return batch_size * replicas, batch_size
    if batch_size % replicas:
        raise DistributeError(
            f"train.batch_size = {batch_size} (global) does not split evenly over {replicas} "
            f"replicas: make it a multiple of {replicas}, or set train.batch_size_scope: replica"
        )
    return batch_size, batch_size // replicas


def learning_rate_scale(mode: str, replicas: int) -> float:
    """What every learning rate is multiplied by: the replica count (`linear`, for a global
    batch that grows with the replicas), its square root (`sqrt`), or 1 (`none`)."""
    return {"none": 1.0, "linear": float(replicas), "sqrt": math.sqrt(replicas)}[mode]


@dataclass(frozen=True)
class Distribution:
    strategy: tf.distribute.Strategy
    kind: str  # none | mirrored | multi_worker
    cluster: Cluster
    replicas: int
    global_batch: int
    per_replica_batch: int
    learning_rate_scale: float

    @property
    def is_chief(self) -> bool:
        return self.cluster.is_chief

    def describe(self) -> str:
        where = f"{self.replicas} replica{'s' if self.replicas > 1 else ''}"
        if self.kind == "multi_worker":
            where += f", {self.cluster.tasks} workers; this is {self.cluster.task_type} "
            where += f"{self.cluster.task_index}{' (chief)' if self.is_chief else ''}"
        return (
            f"{self.kind} ({where}); batch {self.global_batch} global, "
            f"{self.per_replica_batch} per replica"
        )

    def log_params(self) -> dict[str, str | int | float]:
        """What the strategy made of the params, for the run beside the params themselves."""
        return {
            "train.strategy": self.kind,
            "train.replicas": self.replicas,
            "train.workers": self.cluster.tasks,
            "train.batch_size_global": self.global_batch,
            "train.batch_size_per_replica": self.per_replica_batch,
            "train.learning_rate_scale": self.learning_rate_scale,
        }


def configure(cfg: TrainParams, kind: str, batch_size: int) -> Distribution:
    """The strategy `kind` (train.distribute, resolved) for a batch of `batch_size` (resolved)
    counted per `cfg.batch_size_scope`; call after the devices are configured and before any
    model or dataset is made."""
    cluster = read_cluster(os.environ.get("TF_CONFIG"))
    if kind == "multi_worker":
        if cluster.tasks < 2:
            raise DistributeError(
                "train.distribute = multi_worker needs TF_CONFIG describing a cluster of two or "
                "more workers (docs/scaling.md)"
            )
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        patch_keras_for_multi_worker()
    elif kind == "mirrored":
        # every local GPU; without one, every logical CPU device (one, unless configured)
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = tf.distribute.MirroredStrategy([device.name for device in devices])
    else:
        if cluster.tasks > 1:
            raise DistributeError(
                f"TF_CONFIG describes a cluster of {cluster.tasks} tasks but train.distribute = "
                "none: set it to auto or multi_worker, or unset TF_CONFIG"
            )
        strategy = tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    global_batch, per_replica = batch_sizes(batch_size, cfg.batch_size_scope, replicas)
    scale = learning_rate_scale(cfg.scale_learning_rate, replicas)
    return Distribution(strategy, kind, cluster, replicas, global_batch, per_replica, scale)


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Each worker reads every file and keeps its share of every batch (the datasets are built
    from a list of paths, which file-based sharding cannot split)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def barrier(strategy: tf.distribute.Strategy, value: int) -> tuple[int, int]:
    """Wait for every replica of every worker; return the least and greatest `value` any
    of them passed (the same on all: a check that the workers agree)."""

    def one_hot(context: tf.distribute.experimental.ValueContext) -> tf.Tensor:
        values = [0] * context.num_replicas_in_sync
        values[context.replica_id_in_sync_group] = value
        return tf.constant(values, tf.int64)

    # each replica's value in its own slot, summed: every value, on every worker
    values = strategy.reduce(
        "SUM", strategy.experimental_distribute_values_from_function(one_hot), axis=None
    ).numpy()
    return int(values.min()), int(values.max())


_PATCHED = False


def patch_keras_for_multi_worker() -> None:
    """Two changes that let Keras 3's `fit` run under MultiWorkerMirroredStrategy
    (keras-team/keras#20585, open for Keras 3.15):

    - before the first step, Keras builds the model from one batch it first averages across
      replicas with `strategy.reduce`, which fails for input batches across workers; it is
      built from this worker's first replica's batch instead (only shapes and dtypes matter);
    - Keras averages each step's metrics across workers over axis 0, which fails for the
      scalar metrics; they are averaged over the replicas as scalars instead.
    """
    global _PATCHED
    if _PATCHED:
        return
    from keras.src.backend.tensorflow import trainer

    reduce_per_replica = trainer.reduce_per_replica

    def reduce_scalars(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)

    def build_from_local_batch(self, iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                batch = next(batches)
                data_batch = tree.map_structure(
                    lambda v: (
                        self.distribute_strategy.experimental_local_results(v)[0]
                        if isinstance(v, tf.distribute.DistributedValues)
                        else v
                    ),
                    batch,
                )
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    trainer.reduce_per_replica = reduce_scalars
    trainer.TensorFlowTrainer._maybe_symbolic_build = build_from_local_batch
    _PATCHED = True
