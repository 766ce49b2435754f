"""Sample capture: the token bucket, the choice of inputs, the sample message."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from edge_agent.batching import Pending
from edge_agent.metrics import AgentMetrics
from edge_agent.monitoring import ModelMonitor, Observation
from edge_agent.sampling import PAUSE_S, DeviceCaps, SampleCapture, SampleSent, TokenBucket
from edge_agent.transport import TransportError
from stream import codecs, topics
from stream.exceptions import DecodeError
from trainer.reference import build_reference

MANIFEST = SimpleNamespace(name="digits", version="7", labels=["cat", "dog", "fox", "owl"])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """Stands in for edge_agent.delivery.Delivery: keeps what was sent (pure-logic tests;
    tests/integration/test_agent_samples.py sends through the real producer)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, list[Any], Any]] = []

    def send(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Any, token: Any
    ) -> None:
        self.sent.append((topic, value, key, headers, token))


def image(i: int, device: str = "cam-1", label: str = "dog") -> Pending:
    value = codecs.encode_png(np.full((8, 8, 1), i % 256, np.uint8))
    headers = codecs.image_headers("image/png", device, 1718000000000 + i, label=label)
    return Pending(
        x=np.full((8, 8, 1), i % 256, np.uint8),
        device_id=device,
        partition=0,
        offset=i,
        last_offset=i,
        window=False,
        ts=1718000000000 + i,
        kafka_ts=1718000000000 + i,
        headers=headers,
        consumed_at=0.0,
        key=device.encode(),
        value=value,
    )


def capture(
    clock: Clock,
    rate: float = 1.0,
    burst: int = 5,
    per_min: float = 1000.0,
    share: float = 0.0,
    **kw: Any,
) -> tuple[SampleCapture, Recorder, CollectorRegistry]:
    reg = CollectorRegistry()
    rec = Recorder()
    cap = SampleCapture(
        delivery=rec,  # type: ignore[arg-type]
        metrics=AgentMetrics(registry=reg),
        topic="samples",
        source_topic="images",
        agent_id="agent-1",
        rate_per_s=rate,
        burst=burst,
        device_per_min=per_min,
        random_share=share,
        max_bytes=kw.pop("max_bytes", 1 << 20),
        clock=clock,
        seed=0,
        **kw,
    )
    return cap, rec, reg


def observe(scores: list[float], drifting: bool = False) -> tuple[np.ndarray, Observation]:
    """Outputs whose first class has ``scores`` (the rest share what is left)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.stack([s, *[(1 - s) / 3] * 3], axis=1)
    top = y.max(axis=1)
    obs = Observation(scores=top, low=top < 0.5, counts=None, drifting=drifting, binner=None)
    return y, obs


def drive(
    cap: SampleCapture, clock: Clock, batch: list[Pending], scores: list[float], s: float
) -> None:
    """Offer the same batch every 0.1 s for ``s`` seconds."""
    y, obs = observe(scores)
    for _ in range(round(s * 10)):
        cap.offer(MANIFEST, batch, y, obs)
        clock.now += 0.1


# ------------------------------------------------------------------ token bucket


def test_token_bucket_starts_full_refills_and_caps() -> None:
    b = TokenBucket(rate=2.0, burst=3.0, now=0.0)
    assert b.take(10, 0.0) == 3 and b.take(1, 0.0) == 0
    assert b.take(10, 1.0) == 2  # one second at 2/s
    assert b.take(10, 100.0) == 3  # capped at the burst
    assert b.take(1, 50.0) == 0  # a clock going back adds nothing


@settings(max_examples=300, deadline=None)
@given(
    rate=st.floats(0, 50),
    burst=st.integers(1, 20),
    steps=st.lists(st.tuples(st.floats(0, 2), st.integers(0, 100)), min_size=1, max_size=60),
)
def test_token_bucket_never_exceeds_burst_plus_rate_times_time(
    rate: float, burst: int, steps: list[tuple[float, int]]
) -> None:
    b = TokenBucket(rate=rate, burst=float(burst), now=0.0)
    now, times, taken = 0.0, [], []
    for dt, n in steps:
        now += dt
        times.append(now)
        taken.append(b.take(n, now))
    # Over every stretch of the run, not only the whole of it.
    for i in range(len(steps)):
        for j in range(i, len(steps)):
            span = times[j] - (times[i - 1] if i else 0.0)
            assert sum(taken[i : j + 1]) <= burst + rate * span + 1e-6


def test_device_caps_are_bounded_and_least_recently_used_go_first() -> None:
    caps = DeviceCaps(per_min=1.0, max_devices=2)
    assert caps.allows("a", 0.0)
    caps.take("a", 0.0)
    assert not caps.allows("a", 1.0)  # one a minute
    assert caps.allows("b", 1.0) and caps.allows("c", 1.0)
    assert len(caps) == 2  # "a" was dropped
    assert caps.allows("a", 2.0)  # so it starts again with a full bucket
    assert caps.allows("c", 60.0)


# ----------------------------------------------------------------- the choice


def test_a_flood_of_low_confidence_inputs_never_exceeds_the_rate() -> None:
    clock = Clock()
    cap, rec, reg = capture(clock, rate=2.0, burst=5)
    batch = [image(i, device=f"cam-{i}") for i in range(32)]
    drive(cap, clock, batch, [0.1] * 32, 60.0)  # every input low-confidence
    assert len(rec.sent) <= 5 + 2.0 * 60
    assert len(rec.sent) >= 2.0 * 60 - 2  # and the budget is used
    skipped = reg.get_sample_value("edge_agent_samples_skipped_total", {"reason": "rate_limited"})
    assert skipped == 600 * 32 - len(rec.sent)
    assert reg.get_sample_value("edge_agent_samples_total", {"reason": "low_confidence"}) == len(
        rec.sent
    )


def test_least_confident_first_then_the_most_drifted() -> None:
    clock = Clock()
    cap, rec, _ = capture(clock, burst=3)
    ref = build_reference(
        np.random.default_rng(0).normal(size=(50, 20, 1)).astype(np.float32), "sequence"
    )
    mon = ModelMonitor(model="m", version="1", reference=ref, window=10)
    x = np.random.default_rng(1).normal(size=(4, 20, 1)).astype(np.float32)
    x[3] += 50.0  # far outside the training data
    scores = np.array([0.45, 0.9, 0.2, 0.95])
    mon.drift = 1.0  # the window drifts (as a snapshot would have found)
    obs = mon.observe(x, scores)
    assert obs.drifting
    batch = [image(i, device=f"d{i}") for i in range(4)]
    y = np.stack([scores, *[(1 - scores) / 3] * 3], axis=1)
    assert cap.offer(MANIFEST, batch, y, obs) == 3
    sent = [(t.offset, t.reason) for *_, t in rec.sent]
    assert sent == [(2, "low_confidence"), (0, "low_confidence"), (3, "drift")]


def test_no_drift_no_low_confidence_means_only_the_random_share() -> None:
    clock = Clock()
    cap, rec, reg = capture(clock, rate=1.0, burst=5, share=0.2)
    drive(cap, clock, [image(i, device=f"cam-{i}") for i in range(16)], [0.99] * 16, 100.0)
    reasons = {t.reason for *_, t in rec.sent}
    assert reasons == {"random"}
    assert 19 <= len(rec.sent) <= 22  # 0.2 of 1/s over 100 s (+ the first token)
    offsets = {t.offset for *_, t in rec.sent}
    assert len(offsets) > 5  # spread over the batch, not always the first input
    assert reg.get_sample_value("edge_agent_samples_total", {"reason": "random"}) == len(rec.sent)


def test_random_share_is_kept_during_a_flood_and_the_total_holds() -> None:
    clock = Clock()
    cap, rec, _ = capture(clock, rate=2.0, burst=4, share=0.25)
    drive(cap, clock, [image(i, device=f"cam-{i}") for i in range(16)], [0.1] * 16, 120.0)
    reasons = [t.reason for *_, t in rec.sent]
    assert len(reasons) <= 4 + 2.0 * 120
    assert 40 <= reasons.count("random") <= 70  # about a quarter of the budget


def test_one_device_cannot_take_the_whole_budget() -> None:
    clock = Clock()
    cap, rec, reg = capture(clock, rate=100.0, burst=100, per_min=3.0)
    noisy = [image(i, device="broken") for i in range(32)]
    y, obs = observe([0.01] * 32)
    cap.offer(MANIFEST, noisy, y, obs)
    assert len(rec.sent) == 3
    assert (
        reg.get_sample_value("edge_agent_samples_skipped_total", {"reason": "device_cap"}) or 0
    ) >= 1
    quiet = [image(100, device="fine")]
    y1, obs1 = observe([0.2])
    cap.offer(MANIFEST, quiet, y1, obs1)
    assert rec.sent[-1][2] == b"fine"


def test_a_sample_is_the_input_as_received_with_the_prediction() -> None:
    clock = Clock()
    cap, rec, _ = capture(clock)
    it = image(7)
    it.headers = [*it.headers, (topics.H_SAMPLE_REASON, b"stale"), ("x-custom", b"\xff\x00")]
    y, obs = observe([0.3])
    cap.offer(MANIFEST, [it], y, obs)
    topic, value, key, headers, token = rec.sent[0]
    assert topic == "samples" and key == b"cam-1" and value == it.value
    assert token == SampleSent(0, 7, "low_confidence")
    assert ("x-custom", b"\xff\x00") in headers  # original bytes, untouched
    s = codecs.decode_sample(value, headers)
    assert s.reason == "low_confidence" and s.model == "digits" and s.version == "7"
    assert s.label == "cat" and s.score == pytest.approx(0.3)
    third = round(0.7 / 3, 6)  # scores are written with 6 decimals
    assert s.scores == {"cat": 0.3, "dog": third, "fox": third, "owl": third}
    assert s.source_topic == "images" and (s.source_partition, s.source_offset) == (0, 7)
    assert s.agent_id == "agent-1" and s.drift is None
    assert s.headers[topics.H_LABEL] == "dog"  # the true label travels with it
    assert topics.H_SAMPLE_REASON not in s.headers
    frame = codecs.decode_image(value, headers)
    assert (frame.pixels == it.x).all()


def test_a_window_sample_is_a_chunk_of_its_readings() -> None:
    clock = Clock()
    cap, rec, _ = capture(clock)
    readings = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    it = Pending(
        x=readings,
        device_id="watch-2",
        partition=1,
        offset=40,
        last_offset=59,
        window=True,
        ts=1718000000500,
        kafka_ts=0,
        headers=codecs.sensor_headers("watch-2", 1718000000500, label="walking"),
        consumed_at=0.0,
        key=b"watch-2",
        value=None,
    )
    y, obs = observe([0.2])
    cap.offer(MANIFEST, [it], y, obs)
    _, value, _, headers, _ = rec.sent[0]
    chunk = codecs.decode_sensor_record(value, headers, channels=3)
    assert chunk.device_id == "watch-2" and (chunk.samples == readings).all()
    s = codecs.decode_sample(value, headers)
    assert (s.source_offset, s.source_last_offset) == (40, 59)
    assert s.headers[topics.H_LABEL] == "walking"


def test_too_large_samples_are_skipped_before_sending() -> None:
    clock = Clock()
    cap, rec, reg = capture(clock, max_bytes=600)
    y, obs = observe([0.1])
    assert cap.offer(MANIFEST, [image(1)], y, obs) == 0
    assert not rec.sent
    assert reg.get_sample_value("edge_agent_samples_skipped_total", {"reason": "too_large"}) == 1


def test_a_missing_samples_topic_pauses_capture() -> None:
    clock = Clock()
    cap, rec, reg = capture(clock)
    y, obs = observe([0.1])
    cap.offer(MANIFEST, [image(1)], y, obs)
    error = TransportError("no such topic", code="UNKNOWN_TOPIC_OR_PARTITION")
    cap.refused(rec.sent[0][4], error)
    clock.now += 10
    assert cap.offer(MANIFEST, [image(2)], y, obs) == 0
    assert reg.get_sample_value("edge_agent_samples_skipped_total", {"reason": "paused"}) == 1
    assert reg.get_sample_value("edge_agent_samples_skipped_total", {"reason": "refused"}) == 1
    clock.now += PAUSE_S
    assert cap.offer(MANIFEST, [image(3)], y, obs) == 1
    # A sample refused for its own sake (too large for the topic) does not pause.
    cap.refused(rec.sent[-1][4], TransportError("too big", code="MESSAGE_TOO_LARGE"))
    assert cap.offer(MANIFEST, [image(4, device="cam-9")], y, obs) == 1


def test_sample_headers_decode_errors_name_the_header() -> None:
    with pytest.raises(
        codecs.DecodeError if hasattr(codecs, "DecodeError") else Exception, match="sample-reason"
    ):
        codecs.decode_sample(b"x", [])
    headers = codecs.sample_headers(
        [],
        reason="random",
        model="m",
        version="1",
        label="a",
        score=0.5,
        scores={"a": 0.5},
        drift=0.2,
        topic="t",
        partition=0,
        offset=1,
        last_offset=1,
        agent_id="x",
    )
    bad = [(n, b"nan" if n == topics.H_SAMPLE_SCORE else v) for n, v in headers]
    with pytest.raises(DecodeError, match="sample-score"):
        codecs.decode_sample(b"x", bad)
    bad = [(n, b"[1]" if n == topics.H_SAMPLE_SCORES else v) for n, v in headers]
    with pytest.raises(DecodeError, match="sample-scores"):
        codecs.decode_sample(b"x", bad)
    assert codecs.decode_sample(b"x", headers).drift == 0.2
    assert json.loads(dict(headers)[topics.H_SAMPLE_SCORES]) == {"a": 0.5}
