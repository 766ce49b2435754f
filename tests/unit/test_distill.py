"""Knowledge distillation (trainer/distill.py): soft targets, the loss, a tiny student
trained on a tiny teacher's soft targets."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from tests.unit.test_quantization import N_CLASSES, TINY, synthetic  # noqa: E402
from trainer.distill import (  # noqa: E402
    DistillationLoss,
    distillation_targets,
    soften,
    teacher_config,
    train_student,
)
from trainer.exceptions import TrainerConfigError  # noqa: E402
from trainer.models import ModelConfig, build_model  # noqa: E402


def test_teacher_doubles_filters_and_units() -> None:
    student = ModelConfig(arch="gru").resolved((100, 6))
    teacher = teacher_config(student)
    assert teacher.filters == (64,) and teacher.units == 64
    assert teacher.conv_stride == student.conv_stride and teacher.arch == "gru"
    assert (
        build_model(teacher, (100, 6), 4).count_params()
        > 2 * build_model(student, (100, 6), 4).count_params()
    )


def test_soften_flattens_and_keeps_the_order() -> None:
    p = np.array([[0.9, 0.09, 0.01]], dtype=np.float32)
    soft = soften(p, 4.0)
    np.testing.assert_allclose(soft.sum(), 1.0, rtol=1e-6)
    assert soft[0].argmax() == 0 and soft[0, 0] < 0.9 and soft[0, 2] > 0.01
    np.testing.assert_allclose(soften(p, 1.0), p / p.sum(), rtol=1e-5)


def test_loss_is_cross_entropy_at_alpha_one_and_matches_soft_targets_at_zero() -> None:
    y_pred = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
    labels = np.array([0, 2])
    soft = soften(y_pred, 2.0)  # the student already matches these soft targets
    y_true = distillation_targets(labels, soft)
    hard = float(DistillationLoss(alpha=1.0)(y_true, y_pred))
    np.testing.assert_allclose(hard, -np.log([0.7, 0.8]).mean(), rtol=1e-5)
    kd = DistillationLoss(temperature=2.0, alpha=0.0)
    matched = float(kd(y_true, y_pred))
    other = distillation_targets(labels, soften(y_pred[:, ::-1].copy(), 2.0))
    assert float(kd(other, y_pred)) > matched + 0.1
    # At the optimum the soft cross-entropy equals T^2 times the soft targets' entropy.
    entropy = -(soft * np.log(soft)).sum(axis=1).mean()
    np.testing.assert_allclose(matched, 4.0 * entropy, rtol=1e-4)


def test_a_student_learns_from_a_teacher() -> None:
    keras.utils.set_random_seed(0)
    x, y = synthetic("cnn", n=120)
    teacher = build_model(teacher_config(TINY["cnn"].resolved((8, 8, 1))), (8, 8, 1), N_CLASSES)
    teacher.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    teacher.fit(x, y, epochs=10, batch_size=16, verbose=0)
    data = SimpleNamespace(x_train=x[:90], y_train=y[:90], x_val=x[90:], y_val=y[90:])
    hp = SimpleNamespace(seed=0, learning_rate=1e-2, patience=5, epochs=15, batch_size=16)
    student, epochs = train_student(
        TINY["cnn"], teacher, data, input_shape=(8, 8, 1), num_classes=N_CLASSES, hp=hp
    )
    assert 1 <= epochs <= 15
    assert student.count_params() < teacher.count_params()
    accuracy = float((student.predict(x, verbose=0).argmax(axis=1) == y).mean())
    assert accuracy > 0.8, accuracy


def test_streamed_data_is_refused_with_a_clear_message() -> None:
    with pytest.raises(TrainerConfigError, match="--distill needs the training data in memory"):
        train_student(
            TINY["cnn"], None, SimpleNamespace(), input_shape=(8, 8, 1), num_classes=3,
            hp=SimpleNamespace(seed=0),
        )  # fmt: skip
