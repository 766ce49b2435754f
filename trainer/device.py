"""Where training runs: every local GPU (data-parallel, mixed precision) or the CPU.

The same code path runs in both cases: a :class:`tf.distribute.MirroredStrategy` over the
GPUs TensorFlow sees, or over the one CPU device when there is none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import keras
import tensorflow as tf

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingDevice:
    """The distribution strategy chosen for training and how to describe it."""

    strategy: tf.distribute.Strategy
    kind: str  # "GPU" or "CPU"
    devices: tuple[str, ...]
    mixed_precision: bool

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    def describe(self) -> str:
        if self.kind == "GPU":
            return (
                f"training on {len(self.devices)} GPU(s) {', '.join(self.devices)} "
                f"(MirroredStrategy, {self.replicas} replicas, mixed precision float16)"
            )
        return "training on the CPU (no GPU visible to TensorFlow; MirroredStrategy, 1 replica)"


def select_device(*, allow_gpu: bool = True) -> TrainingDevice:
    """Pick every visible GPU (mixed precision) or the CPU, and set the Keras dtype policy."""
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


def make_deterministic(seed: int) -> None:
    """Seed Python, numpy and TensorFlow and make TF ops deterministic (``--seed``)."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
