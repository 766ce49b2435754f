"""The monitor's join of results with feedback (fleet/join.py) and its metrics
(fleet/monitor.py) on decoded bytes: bounded, every message counted, accuracy exact."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleet.join import Accuracy, FeedbackJoin
from fleet.monitor import Monitor, MonitorConfig, monitor_registry
from stream.codecs import encode_feedback, encode_result, feedback_headers
from stream.exceptions import ConfigError
from stream.schemas import Feedback, InferenceResult


def key(offset: int, partition: int = 0, topic: str = "images") -> tuple[str, int, int]:
    return (topic, partition, offset)


def test_accuracy_is_the_share_of_the_last_n() -> None:
    acc = Accuracy(4)
    assert acc.value is None and acc.size == 0
    for correct in (True, False, True, True):
        acc.add(correct)
    assert (acc.value, acc.size) == (0.75, 4)
    acc.add(False)  # the first True leaves the window
    assert (acc.value, acc.size) == (0.5, 4)
    assert (acc.correct, acc.incorrect) == (3, 2)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), max_size=60), st.integers(1, 10))
def test_accuracy_matches_a_recount(scores: list[bool], window: int) -> None:
    acc = Accuracy(window)
    for s in scores:
        acc.add(s)
    tail = scores[-window:]
    assert acc.value == (sum(tail) / len(tail) if tail else None)


def test_joins_in_either_order_and_scores_per_version() -> None:
    j = FeedbackJoin(window=10)
    assert j.add_result(key(1), model="m", version="1", label="7", now=0) is None
    joined = j.add_feedback(key(1), label="7", now=1)
    assert joined is not None and joined.correct and joined.model == "m"
    assert j.add_feedback(key(2), label="3", now=2) is None
    joined = j.add_result(key(2), model="m", version="2", label="8", now=3)
    assert joined is not None and not joined.correct
    assert j.accuracy("m", "1").value == 1.0  # type: ignore[union-attr]
    assert j.accuracy("m", "2").value == 0.0  # type: ignore[union-attr]
    snap = j.snapshot()
    assert snap.outcomes[("results", "matched")] == snap.outcomes[("feedback", "matched")] == 2
    assert snap.pending == {"results": 0, "feedback": 0}
    # The key is the whole (topic, partition, offset).
    j.add_result(key(5, partition=1), model="m", version="1", label="1", now=4)
    assert j.add_feedback(key(5, partition=0), label="1", now=4) is None
    assert j.add_feedback(key(5, topic="sensors", partition=1), label="1", now=4) is None
    assert j.snapshot().pending == {"results": 1, "feedback": 2}


def test_waiting_is_capped_oldest_evicted_and_counted() -> None:
    j = FeedbackJoin(max_results=3, max_feedback=2, max_wait_s=100)
    for i in range(5):
        j.add_result(key(i), model="m", version="1", label="a", now=i)
    for i in range(10, 14):
        j.add_feedback(key(i), label="a", now=i)
    snap = j.snapshot()
    assert snap.pending == {"results": 3, "feedback": 2}
    assert snap.outcomes[("results", "unmatched_evicted")] == 2
    assert snap.outcomes[("feedback", "unmatched_evicted")] == 2
    # The oldest went: results 0 and 1 find nothing to join any more, 4 still does.
    assert j.add_feedback(key(0), label="a", now=20) is None
    assert j.add_feedback(key(4), label="a", now=20) is not None


def test_waiting_expires_by_age_and_a_repeat_replaces() -> None:
    j = FeedbackJoin(max_wait_s=10)
    j.add_result(key(1), model="m", version="1", label="a", now=0)
    j.add_result(key(2), model="m", version="1", label="a", now=5)
    j.add_result(key(2), model="m", version="1", label="b", now=6)  # an agent's replay
    assert j.snapshot().outcomes[("results", "replaced")] == 1
    j.expire(now=10.5)  # key 1 waited 10.5 s
    assert j.snapshot().pending["results"] == 1
    assert j.snapshot().outcomes[("results", "unmatched_evicted")] == 1
    joined = j.add_feedback(key(2), label="b", now=11)
    assert joined is not None and joined.correct  # the second answer counts


def test_versions_are_capped_least_recently_joined_dropped() -> None:
    j = FeedbackJoin(max_versions=2)
    for i, version in enumerate(("1", "2", "1", "3")):
        j.add_result(key(i), model="m", version=version, label="a", now=i)
        j.add_feedback(key(i), label="a", now=i)
    assert [(v.model, v.version) for v in j.snapshot().versions] == [("m", "1"), ("m", "3")]


@pytest.mark.parametrize(
    ("field", "value"), [("window", 0), ("max_results", 0), ("max_versions", 0), ("max_wait_s", 0)]
)
def test_bad_sizes_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        FeedbackJoin(**{field: value})  # type: ignore[arg-type]


def test_a_random_stream_joins_exactly_and_stays_bounded() -> None:
    """Results and feedback of 2,000 inputs in random order: every pair within the caps
    joins, accuracy equals the recount of the last N, waiting never passes its cap."""
    rng = random.Random(1)
    truth = {i: rng.choice("abc") for i in range(2000)}
    predicted = {i: truth[i] if rng.random() < 0.8 else "z" for i in truth}
    events = [("r", i) for i in truth] + [("f", i) for i in truth]
    # Each input's two messages at most 50 events apart.
    events.sort(key=lambda e: 2 * e[1] + rng.random() * 50)
    j = FeedbackJoin(window=300, max_results=100, max_feedback=100)
    order = []
    for t, (kind, i) in enumerate(events):
        if kind == "r":
            got = j.add_result(key(i), model="m", version="1", label=predicted[i], now=t)
        else:
            got = j.add_feedback(key(i), label=truth[i], now=t)
        if got is not None:
            order.append(got.key[2])
        snap = j.snapshot()
        assert snap.pending["results"] <= 100 and snap.pending["feedback"] <= 100
    assert sorted(order) == list(range(2000))
    last = order[-300:]
    expected = sum(predicted[i] == truth[i] for i in last) / 300
    assert j.accuracy("m", "1").value == pytest.approx(expected)  # type: ignore[union-attr]


# ------------------------------------------------------------------ Monitor (bytes in)


def result_bytes(offset: int, label: str, *, version: str = "1", **source: Any) -> bytes:
    return encode_result(
        InferenceResult(
            device_id="cam-1",
            model="digits",
            version=version,
            label=label,
            score=0.9,
            scores={label: 0.9},
            source={"topic": "images", "partition": 0, "offset": offset, **source},
            latency_ms={"e2e": 1.0},
            ts=None,
            produced_at=1,
            agent_id="a",
        )
    )


def feedback_bytes(offset: int, label: str) -> bytes:
    return encode_feedback(
        Feedback(source_topic="images", source_partition=0, source_offset=offset, label=label)
    )


def test_monitor_exports_accuracy_and_counts_invalid_messages() -> None:
    mon = Monitor(MonitorConfig(window=4))
    reg = monitor_registry(mon)
    res, fb = "inference.results", "feedback"
    for i, (pred, true) in enumerate([("1", "1"), ("2", "2"), ("3", "0"), ("4", "4")]):
        mon.handle(res, 0, i, result_bytes(i, pred), [])
        mon.handle(fb, 0, i, feedback_bytes(i, true), feedback_headers())
    # Hostile or broken messages on both topics: counted, skipped.
    for value in (b"", b"\xff", b"[]", json.dumps({"source": {}}).encode(), None, b"{" * 5000):
        mon.handle(res, 0, 99, value, [])
        mon.handle(fb, 0, 99, value, [("content-type", b"application/json")])
    mon.handle(res, 0, 98, result_bytes(98, "1", topic=None), [])  # no source topic
    mon.handle(res, 0, 97, result_bytes(97, "1", version="v" * 200), [])  # label too long
    mon.handle(fb, 0, 96, feedback_bytes(96, "1"), [("content-type", b"image/png")])
    mon.tick()
    v = reg.get_sample_value
    labels = {"model": "digits", "version": "1"}
    assert v("edgeinfer_online_accuracy", labels) == 0.75
    assert v("edgeinfer_online_window_results", labels) == 4
    assert v("edgeinfer_online_joined_total", {**labels, "outcome": "correct"}) == 3
    assert v("edgeinfer_online_joined_total", {**labels, "outcome": "incorrect"}) == 1
    assert v("edgeinfer_monitor_messages_total", {"kind": "results", "outcome": "invalid"}) == 8
    assert v("edgeinfer_monitor_messages_total", {"kind": "feedback", "outcome": "invalid"}) == 7
    assert v("edgeinfer_monitor_messages_total", {"kind": "feedback", "outcome": "matched"}) == 4
    assert v("edgeinfer_monitor_pending", {"kind": "results"}) == 0
    assert v("edgeinfer_monitor_partitions_assigned") == 0
    assert not mon.ready() and mon.alive() is None


def test_monitor_config_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--window must be >= 1, got 0"):
        MonitorConfig(window=0)
    with pytest.raises(ConfigError, match="--max-wait-s must be > 0 seconds"):
        MonitorConfig(max_wait_s=0)


EVENTS = st.lists(
    st.tuples(st.sampled_from("rf"), st.integers(0, 30), st.sampled_from("ab"), st.floats(0, 5)),
    max_size=200,
)


@settings(max_examples=300, deadline=None)
@given(EVENTS, st.integers(1, 8), st.integers(1, 8), st.floats(0.5, 20))
def test_every_message_is_accounted_for_and_waiting_stays_capped(
    events: list[tuple[str, int, str, float]], max_results: int, max_feedback: int, wait: float
) -> None:
    """Whatever arrives in whatever order: each message is matched, evicted, replaced or
    still waiting (exactly one of them), both sides match in pairs, the caps hold."""
    j = FeedbackJoin(max_results=max_results, max_feedback=max_feedback, max_wait_s=wait)
    now = 0.0
    sent = {"results": 0, "feedback": 0}
    joined = 0
    for kind, offset, label, dt in events:
        now += dt
        if kind == "r":
            sent["results"] += 1
            got = j.add_result(key(offset), model="m", version="1", label=label, now=now)
        else:
            sent["feedback"] += 1
            got = j.add_feedback(key(offset), label=label, now=now)
        joined += got is not None
        snap = j.snapshot()
        assert snap.pending["results"] <= max_results
        assert snap.pending["feedback"] <= max_feedback
        for side in ("results", "feedback"):
            o = snap.outcomes
            accounted = sum(o[(side, k)] for k in ("matched", "unmatched_evicted", "replaced"))
            assert accounted + snap.pending[side] == sent[side]  # type: ignore[index]
        assert snap.outcomes[("results", "matched")] == joined
        assert snap.outcomes[("feedback", "matched")] == joined
    acc = j.accuracy("m", "1")
    assert (acc.correct + acc.incorrect if acc else 0) == joined
