"""Delivery epochs: which noted offsets may be committed once the broker acknowledged what.

Pure logic: a fake producer resolves sends in any order the test chooses (the integration
tests run the real clients: test_agent_delivery, test_agent_group, test_agent_undeliverable).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.delivery import Delivery, DeliveryFailed
from edge_agent.transport import TransportError


class FakeProducer:
    """Keeps sends; the test resolves them (any order) before ``resolved`` reports them."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.done: list[tuple[Any, TransportError | None]] = []
        self.waited: list[float] = []

    def send(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Any, token: Any
    ) -> None:
        self.sent.append(token)

    def ack(self, i: int, error: TransportError | None = None) -> None:
        self.done.append((self.sent[i], error))

    def resolved(self, timeout_s: float) -> list[tuple[Any, TransportError | None]]:
        self.waited.append(timeout_s)
        done, self.done = self.done, []
        return done

    def close(self, timeout_s: float) -> None:
        pass


class FakeTransport:
    name = "fake"

    def __init__(self) -> None:
        self.producers: list[FakeProducer] = []

    def producer(self, **_kw: Any) -> FakeProducer:
        self.producers.append(FakeProducer())
        return self.producers[-1]


def delivery() -> tuple[Delivery, FakeProducer]:
    t = FakeTransport()
    d = Delivery(transport=t, client_id="test", request_timeout_ms=1000)  # type: ignore[arg-type]
    assert d.ensure()
    return d, t.producers[-1]


def test_an_epoch_settles_only_when_it_and_every_earlier_one_are_acknowledged() -> None:
    d, p = delivery()
    d.send("out", b"a", None, [], "a")
    e0 = d.mark()
    d.send("out", b"b", None, [], "b")
    d.send("out", b"c", None, [], "c")
    e1 = d.mark()
    assert d.settle(wait=False) == ([], e0 - 1)  # nothing acknowledged yet
    p.ack(2)  # epoch 1 half done, epoch 0 not: nothing settles
    assert d.settle(wait=False) == ([], e0 - 1)
    p.ack(1)  # epoch 1 done, epoch 0 still open
    assert d.settle(wait=False) == ([], e0 - 1)
    p.ack(0)
    assert d.settle(wait=False) == ([], e1)
    assert d.pending == 0
    assert p.waited == [0.0, 0.0, 0.0, 0.0]  # never waited


def test_sends_after_the_last_mark_hold_nothing_back() -> None:
    d, p = delivery()
    d.send("out", b"a", None, [], "a")
    e0 = d.mark()
    d.send("out", b"b", None, [], "b")  # in the open epoch
    p.ack(0)
    assert d.settle(wait=False) == ([], e0)


def test_a_refused_send_comes_back_with_its_token_and_its_epoch_settles() -> None:
    d, p = delivery()
    d.send("out", b"a", None, [], "token-a")
    e0 = d.mark()
    refused = TransportError("too large", code="MESSAGE_TOO_LARGE")
    p.ack(0, refused)
    assert d.settle(wait=False) == ([("token-a", refused)], e0)


def test_a_transient_failure_raises() -> None:
    d, p = delivery()
    d.send("out", b"a", None, [], "a")
    d.mark()
    p.ack(0, TransportError("broker away", code="REQUEST_TIMED_OUT"))
    with pytest.raises(DeliveryFailed):
        d.settle(wait=False)


def test_waiting_with_sends_still_outstanding_raises() -> None:
    d, p = delivery()
    d.send("out", b"a", None, [], "a")
    with pytest.raises(DeliveryFailed, match="not acknowledged"):
        d.sync()
    assert p.waited and p.waited[-1] > 0


def test_reset_forgets_outstanding_sends() -> None:
    d, _p = delivery()
    d.send("out", b"a", None, [], "a")
    d.mark()
    d.reset()
    assert d.pending == 0
    assert d.ensure()
    e = d.mark()
    assert d.settle(wait=False) == ([], e)


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=6),
    data=st.data(),
)
def test_settled_is_always_the_newest_epoch_with_everything_before_it_acknowledged(
    sizes: list[int], data: st.DataObject
) -> None:
    d, p = delivery()
    epoch_of: list[int] = []
    epochs: list[int] = []
    for n in sizes:
        for _ in range(n):
            d.send("out", b"x", None, [], len(epoch_of))
            epoch_of.append(d._epoch)
        epochs.append(d.mark())
    order = data.draw(st.permutations(range(len(epoch_of))))
    acked: set[int] = set()
    for i in order:
        p.ack(i)
        acked.add(i)
        _refused, settled = d.settle(wait=False)
        expected = -1
        for e in epochs:
            if all(j in acked for j, ej in enumerate(epoch_of) if ej <= e):
                expected = e
            else:
                break
        assert settled == expected
    assert d.settle(wait=False)[1] == epochs[-1]
