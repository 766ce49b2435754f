"""Two repairs Keras 3 needs to train under ``tf.distribute.MultiWorkerMirroredStrategy``.

Keras 3 (measured on 3.15.1 with TensorFlow 2.21; keras-team/keras#20585, open) fails in
``model.fit`` under a multi-worker strategy at two places, both in
``keras/src/backend/tensorflow/trainer.py``:

1. ``TensorFlowTrainer._maybe_symbolic_build`` reduces the first *data batch* across the
   workers (``strategy.reduce("MEAN", batch)``) only to learn its shapes, and the reduction
   of a ``PerReplica`` batch raises "Attempt to convert a value (PerReplica...)". The
   repair takes this worker's local batch, which has the same shapes.
2. ``reduce_per_replica`` averages every step output over ``axis=0``; the logs are scalars
   (loss, accuracy), so it raises "Invalid reduction dimension 0 for input with 0
   dimensions". The repair averages scalars over the replicas (``axis=None``).

:func:`repair_keras_for_multi_worker` applies both, once per process, and only when a
multi-worker strategy is used (:func:`trainer.device.select_device`). ``steps_per_execution``
must stay 1 there: the multi-step loop fails to feed a placeholder (measured).
``tests/unit/test_trainer_multiworker.py`` trains two workers, so a Keras upgrade that moves
these functions fails loudly there and here (the attributes are checked).
"""

from __future__ import annotations

import logging
from typing import Any

from trainer.exceptions import TrainerConfigError

logger = logging.getLogger(__name__)

_applied = False


def repair_keras_for_multi_worker() -> None:
    """Replace the two Keras functions above with working versions (idempotent)."""
    global _applied  # noqa: PLW0603  once per process
    if _applied:
        return
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    needed = (
        "reduce_per_replica",
        "_collective_all_reduce_multi_worker",
        "_is_per_replica_instance",
    )
    trainer_class = getattr(tf_trainer, "TensorFlowTrainer", None)
    if not all(hasattr(tf_trainer, n) for n in needed) or not hasattr(
        trainer_class, "_maybe_symbolic_build"
    ):
        msg = (
            "this Keras version moved the functions the multi-worker repair replaces "
            "(trainer/keras_fixes.py); check keras-team/keras#20585 and update the repair"
        )
        raise TrainerConfigError(msg)
    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        multi = tf_trainer._collective_all_reduce_multi_worker(strategy)
        if reduction in ("auto", "mean") and multi:

            def mean(value: Any) -> Any:
                local = (
                    strategy.experimental_local_results(value)[0]
                    if tf_trainer._is_per_replica_instance(value)
                    else value
                )
                return strategy.reduce("MEAN", value, axis=0 if local.shape.rank else None)

            return tree.map_structure(mean, values)
        return original_reduce(values, strategy, reduction)

    def maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> None:
        if self._distribute_strategy is None:
            return
        strategy = self.distribute_strategy

        def local(value: Any) -> Any:
            if isinstance(value, tf.distribute.DistributedValues):
                return strategy.experimental_local_results(value)[0]
            return value

        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tree.map_structure(local, next(batches))
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    tf_trainer.reduce_per_replica = reduce_per_replica
    trainer_class._maybe_symbolic_build = maybe_symbolic_build  # type: ignore[union-attr]
    _applied = True
    logger.info("keras repaired for MultiWorkerMirroredStrategy (keras-team/keras#20585)")
