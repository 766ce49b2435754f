"""Micro-batching: size cap, latency cap, FIFO order."""

from __future__ import annotations

import pytest

from edge_agent.batching import MicroBatcher


def test_full_at_max_batch_and_take_returns_oldest_first() -> None:
    b: MicroBatcher[int] = MicroBatcher(max_batch=3, max_latency_s=1.0)
    for i in range(5):
        b.add(i, now=0.0)
    assert b.full and b.due(0.0)
    assert b.take() == [0, 1, 2]
    assert len(b) == 2 and not b.full
    assert b.take() == [3, 4]
    assert not b and b.take() == []


def test_due_when_oldest_waited_max_latency() -> None:
    b: MicroBatcher[str] = MicroBatcher(max_batch=10, max_latency_s=0.005)
    assert not b.due(100.0)
    assert b.time_left(100.0) is None
    b.add("a", now=100.0)
    b.add("b", now=100.004)
    assert not b.due(100.004)
    assert b.time_left(100.002) == pytest.approx(0.003)
    assert b.due(100.006)
    assert b.time_left(100.010) == 0.0


def test_remaining_items_keep_their_own_arrival_time() -> None:
    b: MicroBatcher[int] = MicroBatcher(max_batch=2, max_latency_s=1.0)
    b.add(0, now=0.0)
    b.add(1, now=0.0)
    b.add(2, now=5.0)
    b.take()
    assert not b.due(5.5)
    assert b.due(6.0)


def test_take_all_empties_beyond_max_batch() -> None:
    b: MicroBatcher[int] = MicroBatcher(max_batch=2, max_latency_s=0.0)
    for i in range(5):
        b.add(i, now=0.0)
    assert list(b) == [0, 1, 2, 3, 4]
    assert b.take_all() == [0, 1, 2, 3, 4]
    assert len(b) == 0


def test_zero_latency_is_due_at_once() -> None:
    b: MicroBatcher[int] = MicroBatcher(max_batch=8, max_latency_s=0.0)
    b.add(1, now=3.0)
    assert b.due(3.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_batch": 0, "max_latency_s": 1.0}, "max_batch"),
        ({"max_batch": 1, "max_latency_s": -1}, "max_latency_s"),
    ],
)
def test_bad_arguments(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MicroBatcher(**kwargs)  # type: ignore[arg-type]


def test_drop_removes_matching_items_and_keeps_the_oldest_time() -> None:
    b: MicroBatcher[int] = MicroBatcher(max_batch=10, max_latency_s=1.0)
    for i, now in enumerate((0.0, 0.2, 0.4, 0.6)):
        b.add(i, now)
    assert b.drop(lambda i: i % 2 == 0) == 2
    assert list(b) == [1, 3]
    assert b.time_left(1.0) == pytest.approx(0.2)  # item 1 arrived at 0.2
    assert b.drop(lambda i: False) == 0 and len(b) == 2
