"""Where training runs: every local GPU (data-parallel, mixed precision) or the CPU, on one
machine or on several.

One machine: a :class:`tf.distribute.MirroredStrategy` over the GPUs TensorFlow sees, or over
the one CPU device when there is none (the same code path in both cases). Several machines
(``--cluster``, or TensorFlow's ``TF_CONFIG``): a
:class:`tf.distribute.MultiWorkerMirroredStrategy` (ring all-reduce on CPUs, NCCL on GPUs),
created before any other TensorFlow op as it requires.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf

from trainer.cluster import Cluster
from trainer.keras_fixes import repair_keras_for_multi_worker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingDevice:
    """The distribution strategy chosen for training and how to describe it."""

    strategy: tf.distribute.Strategy
    kind: str  # "GPU" or "CPU"
    devices: tuple[str, ...]
    mixed_precision: bool
    #: Machines training together (MultiWorkerMirroredStrategy when > 1) and which one this is.
    workers: int = 1
    worker_index: int = 0
    #: This process writes the model, report and bundles (the others only train).
    is_chief: bool = True

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    @property
    def multi_worker(self) -> bool:
        return self.workers > 1

    def barrier(self) -> None:
        """Return when every worker has called this (at once on one machine).

        Workers leave together: a worker that exits while the chief still writes its
        bundles stops sending heartbeats, and TensorFlow then aborts the chief's runtime.
        """
        if not self.multi_worker:
            return
        strategy = self.strategy

        @tf.function
        def all_reduce() -> Any:
            ones = strategy.run(lambda: tf.constant(1.0))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None)

        arrived = int(all_reduce())
        logger.info("workers at the barrier count=%d", arrived)

    def describe(self) -> str:
        if self.multi_worker:
            role = "the chief" if self.is_chief else "not the chief"
            local = f"{len(self.devices)} GPU(s)" if self.kind == "GPU" else "the CPU"
            mixed = ", mixed precision float16" if self.mixed_precision else ""
            return (
                f"training on {self.workers} workers (MultiWorkerMirroredStrategy, "
                f"{self.replicas} replicas): this is worker {self.worker_index} ({role}), "
                f"on {local}{mixed}"
            )
        if self.kind == "GPU":
            return (
                f"training on {len(self.devices)} GPU(s) {', '.join(self.devices)} "
                f"(MirroredStrategy, {self.replicas} replicas, mixed precision float16)"
            )
        return "training on the CPU (no GPU visible to TensorFlow; MirroredStrategy, 1 replica)"


def select_device(*, allow_gpu: bool = True, cluster: Cluster | None = None) -> TrainingDevice:
    """Pick every visible GPU (mixed precision) or the CPU, and set the Keras dtype policy.

    With ``cluster`` (or a ``TF_CONFIG`` naming a cluster) the strategy spans the workers.
    """
    resolver = _cluster_resolver(cluster)
    if resolver is not None:
        return _multi_worker(resolver, allow_gpu=allow_gpu)
    gpus = tf.config.list_logical_devices("GPU") if allow_gpu else []
    if gpus:
        names = tuple(d.name for d in gpus)
        keras.mixed_precision.set_global_policy("mixed_float16")
        strategy: tf.distribute.Strategy = tf.distribute.MirroredStrategy(devices=list(names))
        device = TrainingDevice(strategy, "GPU", names, mixed_precision=True)
    else:
        keras.mixed_precision.set_global_policy("float32")
        cpu = tf.config.list_logical_devices("CPU")[0].name
        strategy = tf.distribute.MirroredStrategy(devices=[cpu])
        device = TrainingDevice(strategy, "CPU", (cpu,), mixed_precision=False)
    logger.info('training device kind="%s" devices="%s"', device.kind, ",".join(device.devices))
    return device


def _cluster_resolver(cluster: Cluster | None) -> Any:
    """A resolver for ``cluster``, else TensorFlow's ``TF_CONFIG`` one when it names a cluster."""
    resolvers = tf.distribute.cluster_resolver
    if cluster is not None:
        spec = tf.train.ClusterSpec({"worker": list(cluster.workers)})
        return resolvers.SimpleClusterResolver(
            spec, task_type="worker", task_id=cluster.index, rpc_layer="grpc"
        )
    from_env = resolvers.TFConfigClusterResolver()  # TensorFlow reads TF_CONFIG itself
    return from_env if from_env.cluster_spec().as_dict() else None


def _multi_worker(resolver: Any, *, allow_gpu: bool) -> TrainingDevice:
    # Physical devices only: listing logical ones would start the runtime before the
    # strategy has configured its collective ops.
    gpus = tf.config.list_physical_devices("GPU") if allow_gpu else []
    if not allow_gpu:
        tf.config.set_visible_devices([], "GPU")
    keras.mixed_precision.set_global_policy("mixed_float16" if gpus else "float32")
    repair_keras_for_multi_worker()
    implementation = (
        tf.distribute.experimental.CommunicationImplementation.NCCL
        if gpus
        else tf.distribute.experimental.CommunicationImplementation.RING
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=resolver,
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=implementation
        ),
    )
    spec = resolver.cluster_spec().as_dict()
    workers = sum(len(spec.get(job, [])) for job in ("chief", "worker"))
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    is_chief = task_type == "chief" or (
        task_type == "worker" and task_id == 0 and "chief" not in spec
    )
    device = TrainingDevice(
        strategy,
        "GPU" if gpus else "CPU",
        tuple(strategy.extended.worker_devices),
        mixed_precision=bool(gpus),
        workers=workers,
        worker_index=task_id,
        is_chief=is_chief,
    )
    logger.info(
        'training device kind="%s" workers=%d task="%s:%d" chief=%s',
        device.kind, workers, task_type, task_id, is_chief,
    )  # fmt: skip
    return device


def make_deterministic(seed: int) -> None:
    """Seed Python, numpy and TensorFlow and make TF ops deterministic (``--seed``)."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
