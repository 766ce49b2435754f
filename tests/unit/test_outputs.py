"""Model output checks and the gate that rolls back a model whose outputs go bad."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.outputs import OutputGate, usable_rows


def test_finite_rows_of_the_right_shape_are_usable() -> None:
    y = np.array([[0.1, 0.9], [np.nan, 0.5], [np.inf, 0.0], [0.3, 0.7]], np.float32)
    ok, why = usable_rows(y, 4, 2)
    assert ok.tolist() == [True, False, False, True]
    assert "NaN or infinite" in why


@pytest.mark.parametrize(
    ("shape", "rows", "classes"),
    [((4,), 4, 2), ((4, 3), 4, 2), ((3, 2), 4, 2), ((4, 2, 1), 4, 2)],
)
def test_an_unexpected_shape_makes_every_row_unusable(
    shape: tuple[int, ...], rows: int, classes: int
) -> None:
    ok, why = usable_rows(np.zeros(shape, np.float32), rows, classes)
    assert not ok.any()
    assert f"shaped {shape}" in why


def test_gate_trips_on_a_majority_of_bad_outputs_from_several_devices() -> None:
    gate = OutputGate(window=20, min_inputs=10, threshold=0.5, min_devices=3)
    gate.record(np.array([False] * 9), ["a", "b", "c"] * 3)
    assert not gate.tripped()  # fewer than min_inputs seen
    gate.record(np.array([False]), ["a"])
    assert gate.tripped()
    gate.reset()
    assert gate.share == 0.0 and not gate.tripped()


def test_gate_ignores_one_device_and_a_minority() -> None:
    one = OutputGate(window=20, min_inputs=10, threshold=0.5, min_devices=3)
    one.record(np.array([False] * 20), ["attacker"] * 20)
    assert not one.tripped()  # one device sending extreme readings cannot force a rollback
    few = OutputGate(window=20, min_inputs=10, threshold=0.5, min_devices=1)
    few.record(np.array([False] * 5 + [True] * 15), [str(i) for i in range(20)])
    assert few.share == 0.25 and not few.tripped()
    few.record(np.array([False] * 20), [str(i) for i in range(20)])  # the window slides
    assert few.share == 1.0 and few.tripped()
