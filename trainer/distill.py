"""Knowledge distillation (``--distill``): a larger teacher, then the default-size student
trained on the teacher's soft targets.

The trained model of the run is the *student alone* (same size, hard labels only). With
``--distill`` the trainer then trains a teacher (:func:`teacher_config`: twice the filters
and units) on the same data and seed, and a fresh student of the run's size on

    loss = alpha * CE(labels, p_s) + (1 - alpha) * T^2 * CE(soft_T(p_t), soft_T(p_s))

where ``soft_T(p) = softmax(log(p) / T)`` (Hinton et al. 2015; the models end in a softmax,
so ``log p`` stands in for the logits up to a constant that softmax ignores). The distilled
student is exported as ``distilled-<variant>`` variants and judged by the same gates.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import keras
import numpy as np

from trainer.exceptions import TrainerConfigError
from trainer.models import ModelConfig, build_model

logger = logging.getLogger(__name__)

TEMPERATURE = 4.0
ALPHA = 0.3
#: Keras file of the distilled student, next to ``model.keras`` (the teacher: ``teacher/``).
DISTILLED_MODEL_FILE = "model_distilled.keras"
EPSILON = 1e-7


def teacher_config(config: ModelConfig) -> ModelConfig:
    """The teacher of a (resolved) student config: twice the filters and the units."""
    return replace(
        config,
        filters=tuple(2 * f for f in config.filters),
        units=2 * config.units if config.units else 0,
    )


def soften(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(p) / T)``: the teacher's soft targets at temperature ``T``."""
    logits = np.log(np.clip(probabilities, EPSILON, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def distillation_targets(labels: np.ndarray, soft: np.ndarray) -> np.ndarray:
    """One array for Keras: column 0 the class id, the rest the soft targets."""
    return np.concatenate([labels.reshape(-1, 1).astype(np.float32), soft], axis=1)


@keras.saving.register_keras_serializable(package="edgeinfer")
class DistillationLoss(keras.losses.Loss):  # type: ignore[misc]
    """Hard-label cross-entropy plus temperature-scaled cross-entropy to soft targets."""

    def __init__(
        self, temperature: float = TEMPERATURE, alpha: float = ALPHA, **kwargs: Any
    ) -> None:
        super().__init__(name=kwargs.pop("name", "distillation"), **kwargs)
        self.temperature = temperature
        self.alpha = alpha

    def call(self, y_true: Any, y_pred: Any) -> Any:
        ops = keras.ops
        labels = ops.cast(y_true[:, 0], "int32")
        soft = y_true[:, 1:]
        hard = keras.losses.sparse_categorical_crossentropy(labels, y_pred)
        log_p = ops.log(ops.clip(y_pred, EPSILON, 1.0)) / self.temperature
        log_soft_student = log_p - ops.logsumexp(log_p, axis=-1, keepdims=True)
        kd = -ops.sum(soft * log_soft_student, axis=-1) * self.temperature**2
        return self.alpha * hard + (1.0 - self.alpha) * kd

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "temperature": self.temperature, "alpha": self.alpha}


def _require_arrays(data: Any) -> None:
    if not all(hasattr(data, name) for name in ("x_train", "y_train", "x_val", "y_val")):
        msg = "--distill needs the training data in memory (not a streamed image folder or topic)"
        raise TrainerConfigError(msg)


def train_student(
    config: ModelConfig,
    teacher: keras.Model,
    data: Any,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    hp: Any,
    temperature: float = TEMPERATURE,
    alpha: float = ALPHA,
    verbose: int | str = 0,
) -> tuple[keras.Model, int]:
    """A fresh ``config`` model trained on ``data`` (``x_train``/``y_train``/``x_val``/
    ``y_val`` arrays) against ``teacher``'s soft targets; early stopping as in training."""
    _require_arrays(data)
    keras.utils.set_random_seed(hp.seed)

    def targets(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        soft = soften(np.asarray(teacher.predict(x, batch_size=256, verbose=0)), temperature)
        return distillation_targets(np.asarray(y), soft)

    student = build_model(config, input_shape, num_classes)
    student.compile(
        optimizer=keras.optimizers.Adam(hp.learning_rate, clipnorm=1.0),
        loss=DistillationLoss(temperature=temperature, alpha=alpha),
        steps_per_execution=16,
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=hp.patience, restore_best_weights=True
    )
    fit = student.fit(
        data.x_train,
        targets(data.x_train, data.y_train),
        validation_data=(data.x_val, targets(data.x_val, data.y_val)),
        epochs=hp.epochs,
        batch_size=hp.batch_size,
        callbacks=[stop],
        verbose=verbose,
    )
    return student, len(fit.history.get("loss", []))


def distilled_candidate(
    result: Any, *, temperature: float = TEMPERATURE, alpha: float = ALPHA, verbose: int = 0
) -> tuple[Any, dict[str, Any]]:
    """Train a teacher and a distilled student for a trained run (``TrainResult``); return
    the export candidate (``distilled-<variant>``) and the report's ``distillation`` section.
    The teacher's run folder is ``<run>/teacher``; the student is ``model_distilled.keras``.
    """
    from trainer.evaluate import accuracy
    from trainer.export import Candidate
    from trainer.train import train

    data = result.data
    _require_arrays(data)  # before the teacher trains
    teacher_run = train(
        result.dataset,
        teacher_config(result.config),
        hyperparameters=result.hyperparameters,
        out_dir=result.out_dir / "teacher",
        verbose=verbose,
        dataset_spec=result.extra.get("dataset"),
        name=f"{result.extra.get('name', 'model')}-teacher",
    )
    student, epochs = train_student(
        result.config,
        teacher_run.model,
        data,
        input_shape=tuple(int(d) for d in result.model.input_shape[1:]),
        num_classes=len(result.dataset.labels),
        hp=result.hyperparameters,
        temperature=temperature,
        alpha=alpha,
        verbose=verbose,
    )
    student.save(result.out_dir / DISTILLED_MODEL_FILE)

    def summary(model: keras.Model) -> dict[str, Any]:
        predicted = model.predict(data.x_test, batch_size=256, verbose=0).argmax(axis=1)
        return {"accuracy": accuracy(data.y_test, predicted), "params": model.count_params()}

    teacher_summary = summary(teacher_run.model)
    student_summary = {**summary(student), "epochs_run": epochs}
    alone_summary = summary(result.model)
    section = {
        "teacher": teacher_summary,
        "student": student_summary,
        "student_alone": alone_summary,
        "temperature": temperature,
        "alpha": alpha,
        "teacher_config": teacher_config(result.config).to_dict(),
        "model": DISTILLED_MODEL_FILE,
        "variants": [],
    }
    logger.info(
        "distilled teacher=%.4f student=%.4f student_alone=%.4f",
        teacher_summary["accuracy"], student_summary["accuracy"], alone_summary["accuracy"],
    )  # fmt: skip
    candidate = Candidate(
        prefix="distilled", model=student, fields={"source": "distilled"}, section="distillation"
    )
    return candidate, section
