"""Magnitude pruning during fine-tuning (``--prune SPARSITY``), written for Keras 3.

TensorFlow Model Optimization's pruning wraps ``tf_keras`` (Keras 2) layers only: its
``prune_low_magnitude`` refuses a Keras 3 model (tfmot issue #1119, open), and this project
trains with Keras 3. So the pruning here is small and hand-written, the same algorithm:

* the kernels of every layer except the output layer (conv, dense, the LSTM/GRU input and
  recurrent kernels; no biases) are prunable;
* during fine-tuning, :class:`MagnitudePruning` raises each kernel's sparsity from 0 to the
  target along tfmot's polynomial schedule (:class:`PruningSchedule`), zeroing the weights
  of smallest magnitude in each kernel every ``frequency`` steps and re-applying the masks
  after every optimizer step (so pruned weights stay zero);
* the rest of the fine-tuning keeps the final masks; the model that comes out is a plain
  Keras model with zeros in its kernels ("stripped": there is no wrapper to remove).

Zeros do not shrink a LiteRT flatbuffer (dense tensors); they shrink its gzip-compressed
size, which is what an over-the-air download costs (``gzip_size_bytes`` in the report).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from trainer.exceptions import TrainerConfigError

logger = logging.getLogger(__name__)

#: The classifier head is left dense (pruning a 32x4 output layer costs accuracy for nothing).
OUTPUT_LAYER = "probabilities"
#: Share of the fine-tuning steps over which sparsity ramps up; the rest recovers accuracy.
RAMP_SHARE = 0.7
#: Mask updates during the ramp.
RAMP_UPDATES = 20


def check_sparsity(sparsity: float) -> float:
    """``sparsity`` if it is in (0, 1), else a :class:`TrainerConfigError` naming the flag."""
    if not 0.0 < sparsity < 1.0:
        msg = f"--prune {sparsity}: give the share of kernel weights to zero, between 0 and 1"
        raise TrainerConfigError(msg)
    return sparsity


@dataclass(frozen=True, kw_only=True)
class PruningSchedule:
    """tfmot's ``PolynomialDecay``: sparsity rises from ``initial`` to ``target`` between
    ``begin_step`` and ``end_step`` as ``target + (initial - target) * (1 - t) ** power``,
    with masks recomputed every ``frequency`` steps (and at ``end_step``)."""

    target: float
    end_step: int
    begin_step: int = 0
    initial: float = 0.0
    power: float = 3.0
    frequency: int = 1

    def __post_init__(self) -> None:
        check_sparsity(self.target)
        if self.end_step <= self.begin_step or self.frequency < 1:
            msg = (
                f"pruning schedule: end_step {self.end_step} must be after begin_step "
                f"{self.begin_step} and frequency {self.frequency} >= 1"
            )
            raise TrainerConfigError(msg)

    @classmethod
    def over(cls, total_steps: int, target: float) -> PruningSchedule:
        """Ramp over the first :data:`RAMP_SHARE` of ``total_steps``."""
        end = max(1, int(total_steps * RAMP_SHARE))
        return cls(target=target, end_step=end, frequency=max(1, end // RAMP_UPDATES))

    def sparsity_at(self, step: int) -> float:
        if step <= self.begin_step:
            return self.initial
        t = min(1.0, (step - self.begin_step) / (self.end_step - self.begin_step))
        return self.target + (self.initial - self.target) * (1.0 - t) ** self.power

    def updates_at(self, step: int) -> bool:
        """True when the masks are recomputed after ``step`` (1-based)."""
        if step < self.begin_step or step > self.end_step:
            return False
        return step == self.end_step or (step - self.begin_step) % self.frequency == 0


def magnitude_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """A 0/1 mask zeroing exactly ``round(sparsity * size)`` weights of smallest magnitude."""
    k = int(round(sparsity * weights.size))
    mask = np.ones(weights.shape, dtype=weights.dtype)
    if k > 0:
        order = np.argsort(np.abs(weights).ravel(), kind="stable")
        mask.ravel()[order[:k]] = 0
    return mask


def prunable_weights(model: keras.Model) -> list[Any]:
    """The kernels that are pruned: every trainable weight of rank >= 2 outside the output
    layer (conv and dense kernels, LSTM/GRU kernels and recurrent kernels)."""
    return [
        w
        for layer in model.layers
        if layer.name != OUTPUT_LAYER
        for w in layer.trainable_weights
        if len(w.shape) >= 2
    ]


def sparsity_of(model: keras.Model) -> float:
    """Share of zeros among the prunable weights of ``model``."""
    weights = [np.asarray(w.numpy()) for w in prunable_weights(model)]
    total = sum(w.size for w in weights)
    return float(sum(int((w == 0).sum()) for w in weights) / total) if total else 0.0


class MagnitudePruning(keras.callbacks.Callback):  # type: ignore[misc]
    """Keras callback: recompute magnitude masks on ``schedule`` and apply them after every
    training step (fit with ``steps_per_execution=1`` so every step is seen)."""

    def __init__(self, schedule: PruningSchedule, weights: list[Any]) -> None:
        super().__init__()
        self.schedule = schedule
        self.weights_to_prune = weights
        self.masks = [np.ones(w.shape, dtype=np.float32) for w in weights]
        self.step = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.step += 1
        if self.schedule.updates_at(self.step):
            sparsity = self.schedule.sparsity_at(self.step)
            self.masks = [
                magnitude_mask(np.asarray(w.numpy()), sparsity) for w in self.weights_to_prune
            ]
        self.apply_masks()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        # Short fits may end before the ramp does: leave the model at the target.
        if self.step < self.schedule.end_step:
            self.masks = [
                magnitude_mask(np.asarray(w.numpy()), self.schedule.target)
                for w in self.weights_to_prune
            ]
        self.apply_masks()

    def apply_masks(self) -> None:
        for w, mask in zip(self.weights_to_prune, self.masks, strict=True):
            w.assign(np.asarray(w.numpy()) * mask)


@dataclass(frozen=True, kw_only=True)
class PruneResult:
    model: Any  # keras.Model, pruned and stripped
    target: float
    sparsity: float
    prunable_params: int
    epochs: int
    steps: int


def prune(
    model: keras.Model,
    train_data: Any,
    *,
    sparsity: float,
    epochs: int,
    learning_rate: float,
    steps_per_epoch: int,
    validation_data: Any = None,
    verbose: int | str = 0,
) -> PruneResult:
    """Fine-tune a copy of ``model`` on ``train_data`` (a ``tf.data`` dataset of batches)
    while pruning it to ``sparsity``; ``model`` itself is left as it was."""
    check_sparsity(sparsity)
    if epochs < 1 or steps_per_epoch < 1:
        msg = f"--prune-epochs must be >= 1 and the data non-empty, got {epochs} epochs"
        raise TrainerConfigError(msg)
    pruned = keras.models.clone_model(model)
    pruned.set_weights(model.get_weights())
    pruned.compile(
        optimizer=keras.optimizers.Adam(learning_rate, clipnorm=1.0),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=1,  # the callback must see (and re-mask after) every step
    )
    weights = prunable_weights(pruned)
    schedule = PruningSchedule.over(epochs * steps_per_epoch, sparsity)
    callback = MagnitudePruning(schedule, weights)
    pruned.fit(
        train_data,
        validation_data=validation_data,
        epochs=epochs,
        callbacks=[callback],
        verbose=verbose,
        shuffle=False,
    )
    measured = sparsity_of(pruned)
    logger.info(
        "pruned target=%.3f sparsity=%.4f steps=%d prunable_params=%d",
        sparsity, measured, callback.step, sum(int(np.prod(w.shape)) for w in weights),
    )  # fmt: skip
    return PruneResult(
        model=pruned,
        target=sparsity,
        sparsity=measured,
        prunable_params=sum(int(np.prod(w.shape)) for w in weights),
        epochs=epochs,
        steps=callback.step,
    )


#: Keras file of the pruned model, next to ``model.keras``.
PRUNED_MODEL_FILE = "model_pruned.keras"


def pruned_candidate(
    result: Any, *, sparsity: float, epochs: int = 0, verbose: int | str = 0
) -> tuple[Any, dict[str, Any]]:
    """Prune a trained model (a ``trainer.train.TrainResult``) and return the export
    candidate (variants named ``pruned-<variant>``) and the report's ``pruning`` section.

    ``epochs`` 0 = a quarter of the training epochs, at least 10; the learning rate is a
    third of the training one. The pruned model is saved as ``model_pruned.keras``.
    """
    from trainer.evaluate import accuracy
    from trainer.export import Candidate

    hp = result.hyperparameters
    epochs = epochs or max(10, hp.epochs // 4)
    data = result.data
    pruned = prune(
        result.model,
        data.train_dataset(batch_size=hp.batch_size, seed=hp.seed),
        sparsity=sparsity,
        epochs=epochs,
        learning_rate=hp.learning_rate / 3,
        steps_per_epoch=max(1, -(-int(data.n_train) // hp.batch_size)),
        verbose=verbose,
    )
    result.out_dir.mkdir(parents=True, exist_ok=True)
    pruned.model.save(result.out_dir / PRUNED_MODEL_FILE)
    predicted = pruned.model.predict(data.x_test, batch_size=256, verbose=0).argmax(axis=1)
    section = {
        "sparsity": sparsity,
        "measured_sparsity": round(pruned.sparsity, 4),
        "prunable_params": pruned.prunable_params,
        "fine_tune_epochs": pruned.epochs,
        "fine_tune_steps": pruned.steps,
        "keras": {"accuracy": accuracy(data.y_test, predicted)},
        "model": PRUNED_MODEL_FILE,
        "variants": [],
    }
    fields = {"source": "pruned", "sparsity": round(pruned.sparsity, 4)}
    candidate = Candidate(prefix="pruned", model=pruned.model, fields=fields, section="pruning")
    return candidate, section
