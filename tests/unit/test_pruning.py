"""Magnitude pruning (trainer/pruning.py): schedule, masks, and a tiny model pruned for real,
exported to LiteRT with its zeros intact."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from tests.unit.test_quantization import N_CLASSES, TINY, synthetic  # noqa: E402
from trainer.exceptions import TrainerConfigError  # noqa: E402
from trainer.export import convert, gzip_size  # noqa: E402
from trainer.models import build_model  # noqa: E402
from trainer.pruning import (  # noqa: E402
    PruningSchedule,
    check_sparsity,
    magnitude_mask,
    prunable_weights,
    prune,
    sparsity_of,
)
from trainer.quantization import QuantizationConfig  # noqa: E402


def test_schedule_ramps_polynomially_to_the_target() -> None:
    s = PruningSchedule(target=0.8, end_step=100, frequency=10)
    values = [s.sparsity_at(step) for step in range(0, 130)]
    assert values[0] == 0.0
    assert values[100] == pytest.approx(0.8) and values[129] == pytest.approx(0.8)
    assert all(b >= a for a, b in zip(values, values[1:], strict=False))
    assert s.sparsity_at(50) == pytest.approx(0.8 - 0.8 * 0.5**3)  # tfmot's power 3
    assert [step for step in range(1, 130) if s.updates_at(step)] == list(range(10, 101, 10))


def test_schedule_over_a_fit_ramps_for_most_of_it_and_updates_often() -> None:
    s = PruningSchedule.over(200, 0.5)
    assert s.end_step == 140 and s.frequency == 7
    tiny = PruningSchedule.over(3, 0.5)
    assert tiny.end_step == 2 and tiny.frequency == 1


def test_magnitude_mask_zeroes_exactly_the_smallest_weights() -> None:
    w = np.array([[0.5, -0.1, 0.0], [2.0, -3.0, 0.2]], dtype=np.float32)
    mask = magnitude_mask(w, 0.5)
    assert mask.tolist() == [[1, 0, 0], [1, 1, 0]]
    tied = np.ones((10, 10), dtype=np.float32)
    assert int((magnitude_mask(tied, 0.3) == 0).sum()) == 30
    assert magnitude_mask(w, 0.01).all()  # rounds to no weight


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, 1.5])
def test_sparsity_outside_zero_to_one_is_refused_with_the_flag(bad: float) -> None:
    with pytest.raises(TrainerConfigError, match=r"--prune .*between 0 and 1"):
        check_sparsity(bad)


def test_prunable_weights_are_kernels_outside_the_output_layer() -> None:
    model = build_model(TINY["gru"], (16, 3), N_CLASSES)
    names = sorted(w.path for w in prunable_weights(model))
    assert names == ["frontend/kernel", "gru/gru_cell/kernel", "gru/gru_cell/recurrent_kernel"]


@pytest.mark.parametrize("arch", ["cnn", "gru"])
def test_prune_reaches_the_target_keeps_accuracy_and_shrinks_the_gzip(arch: str) -> None:
    keras.utils.set_random_seed(0)
    x, y = synthetic(arch)
    model = build_model(TINY[arch], tuple(x.shape[1:]), N_CLASSES)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    before = [w.copy() for w in model.get_weights()]
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    result = prune(model, data, sparsity=0.6, epochs=8, learning_rate=3e-3, steps_per_epoch=6)

    assert result.sparsity == pytest.approx(0.6, abs=0.01)
    assert sparsity_of(result.model) == pytest.approx(result.sparsity)
    assert sparsity_of(model) < 0.05  # the trained model is left alone
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    accuracy = float((result.model.predict(x, verbose=0).argmax(axis=1) == y).mean())
    assert accuracy > 0.8, accuracy
    if arch == "cnn":  # the tiny GRU's file is mostly per-tensor metadata, not weights
        # int8 keeps exact zeros: the pruned file compresses better at the same raw size.
        dense = convert(model, QuantizationConfig.for_int8(x))
        sparse = convert(result.model, QuantizationConfig.for_int8(x))
        assert abs(len(sparse) - len(dense)) < 0.02 * len(dense)  # dense tensors either way
        assert gzip_size(sparse) < 0.9 * gzip_size(dense), (gzip_size(sparse), gzip_size(dense))
