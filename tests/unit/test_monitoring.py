"""On-device monitoring: PSI, binning, the sliding summary, the exported metrics."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from prometheus_client import CollectorRegistry

from edge_agent.delivery import DeliveryFailed
from edge_agent.metrics import AgentMetrics
from edge_agent.monitoring import (
    CONFIDENCE_BUCKETS,
    MEMORY_BUDGET_BYTES,
    MIN_INPUTS,
    InputBinner,
    ModelMonitor,
    Monitoring,
    psi,
)
from stream.reference import Reference
from trainer.reference import build_reference, score_reference

RNG = np.random.default_rng(0)
TRAIN = RNG.normal(size=(400, 50, 3)).astype(np.float32)
_BUILT = build_reference(TRAIN, "sequence")
assert _BUILT is not None
#: Training windows of 3 channels; a model that scored 0.9 on every test input.
SEQ_REF = Reference(
    kind=_BUILT.kind,
    samples=_BUILT.samples,
    channels=_BUILT.channels,
    score=score_reference(np.tile([[0.9, 0.1]], (100, 1))),
)


def monitor(reference: Reference | None = SEQ_REF, window: int = 200, **kw: Any) -> ModelMonitor:
    return ModelMonitor(model="m", version="1", reference=reference, window=window, **kw)


def windows(n: int, gain: float = 1.0, offset: float = 0.0, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 50, 3)) * gain + offset).astype(np.float32)


def test_psi_is_zero_for_equal_shares_and_matches_the_formula() -> None:
    assert psi(np.array([0.5, 0.5]), np.array([0.5, 0.5])) == 0.0
    expected = 0.4 * math.log(0.9 / 0.5) + (-0.4) * math.log(0.1 / 0.5)
    assert psi(np.array([0.5, 0.5]), np.array([0.9, 0.1])) == pytest.approx(expected)
    # An empty bin is floored, not infinite.
    assert math.isfinite(float(psi(np.array([0.5, 0.5]), np.array([1.0, 0.0]))))
    # Per row along the last axis.
    assert psi(np.array([[0.5, 0.5]] * 2), np.array([[0.5, 0.5], [0.9, 0.1]])).shape == (2,)


def direct_counts(ref: Reference, x: np.ndarray) -> np.ndarray:
    """The plain way: one searchsorted per channel on float64 values."""
    out = np.zeros((len(x), len(ref.channels), 10), dtype=np.int64)
    for c, ch in enumerate(ref.channels):
        bins = np.searchsorted(np.asarray(ch.edges), x[..., c].astype(np.float64), side="right")
        for i in range(len(x)):
            out[i, c] = np.bincount(bins[i].ravel(), minlength=10)
    return out


def test_binner_counts_each_input_per_channel() -> None:
    b = InputBinner(SEQ_REF, max_values=1000)
    x = windows(4)
    counts = b.counts(x)
    assert counts is not None and counts.shape == (4, 3, 10)
    assert (counts.sum(axis=-1) == 50).all()
    assert (counts == direct_counts(SEQ_REF, x)).all()
    assert b.counts(np.zeros((2, 50, 4), np.float32)) is None  # other channel count


def test_values_beyond_the_edges_land_in_the_outer_bins() -> None:
    b = InputBinner(SEQ_REF, max_values=1000)
    x = np.array([[[1e30, -1e30, np.inf], [-np.inf, 3.4e38, 0.0]]], dtype=np.float32)
    counts = b.counts(x)
    assert counts is not None
    assert (counts == direct_counts(SEQ_REF, x)).all()
    nan = b.counts(np.full((1, 1, 3), np.nan, np.float32))
    assert nan is not None and (nan[0, :, 0] == 1).all()  # NaN: the lowest bin


def test_each_input_is_strided_to_the_cap() -> None:
    x = windows(2)  # 50 readings per channel
    counts = InputBinner(SEQ_REF, max_values=20).counts(x)
    assert counts is not None and (counts.sum(axis=-1) == 17).all()  # every 3rd reading
    assert (counts == direct_counts(SEQ_REF, x[:, ::3])).all()


def test_image_pixels_use_the_lookup_table_and_are_strided_to_the_cap() -> None:
    ref = build_reference(np.zeros((2, 4, 4, 3), np.uint8), "image")
    assert ref is not None
    b = InputBinner(ref, max_values=100)
    x = RNG.integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)
    counts = b.counts(x)
    assert counts is not None and counts.shape == (3, 3, 16)
    assert (counts.sum(axis=-1) <= 100).all() and (counts.sum(axis=-1) > 50).all()
    # The table gives the same bins as searchsorted on the float values.
    same = b.counts(x.astype(np.float32))
    assert same is not None and (same == counts).all()


def test_inputs_like_the_training_data_score_low_and_shifted_ones_high() -> None:
    m = monitor()
    m.observe(windows(200), np.full(200, 0.9))
    same = m.snapshot()
    assert same.drift is not None and same.drift < 0.1
    assert len(same.channel_drift) == 3
    m.observe(windows(200, gain=2.0, seed=2), np.full(200, 0.9))
    shifted = m.snapshot()
    assert shifted.drift is not None and shifted.drift > 0.25
    assert m.drifting


def test_one_drifted_channel_is_enough() -> None:
    m = monitor()
    x = windows(200)
    x[:, :, 2] += 3.0
    m.observe(x, np.full(200, 0.9))
    snap = m.snapshot()
    assert snap.channel_drift[0] < 0.1 and snap.channel_drift[2] > 1.0
    assert snap.drift == snap.channel_drift[2]


def test_the_window_slides_back_after_drift_ends() -> None:
    m = monitor(window=200)
    m.observe(windows(200, offset=2.0), np.full(200, 0.9))
    assert (m.snapshot().drift or 0) > 1.0
    for seed in range(4):  # four batches of 50 ordinary inputs replace the window
        m.observe(windows(50, seed=10 + seed), np.full(50, 0.9))
    snap = m.snapshot()
    assert snap.inputs == 200 and snap.drift is not None and snap.drift < 0.1
    assert not m.drifting


def test_drift_needs_enough_inputs_and_a_reference() -> None:
    m = monitor(window=1000)
    m.observe(windows(MIN_INPUTS - 1), np.full(MIN_INPUTS - 1, 0.9))
    assert m.snapshot().drift is None
    m.observe(windows(1), np.full(1, 0.9))
    assert m.snapshot().drift is not None
    bare = monitor(reference=None)
    bare.observe(windows(300), np.full(300, 0.9))
    snap = bare.snapshot()
    assert snap.drift is None and snap.confidence_drift is None and snap.inputs == 200


def test_confidence_histogram_low_share_and_score_drift() -> None:
    m = monitor(window=4, low_confidence=0.5)
    m.observe(windows(3), np.array([0.05, 0.45, 0.97]))
    m.observe(windows(2), np.array([0.5, 1.0]))
    snap = m.snapshot()
    assert snap.count == 5 and snap.total == pytest.approx(0.05 + 0.45 + 0.97 + 0.5 + 1.0)
    le = dict(zip(CONFIDENCE_BUCKETS, snap.buckets, strict=False))
    assert le[0.1] == 1 and le[0.4] == 1 and le[0.5] == 3 and le[0.95] == 3 and le[0.99] == 4
    assert snap.buckets[-1] == 5  # +Inf
    # The window holds the last 4 scores: 0.45, 0.97, 0.5, 1.0 -> one below 0.5.
    assert snap.low_confidence_ratio == 0.25 and snap.inputs == 4
    # Scores far from the test split's (all 0.9) give a large confidence drift.
    assert snap.confidence_drift is not None and snap.confidence_drift > 1.0


def test_memory_is_bounded_whatever_the_window() -> None:
    many = build_reference(RNG.normal(size=(20, 10, 1000)).astype(np.float32), "sequence")
    assert many is not None
    m = ModelMonitor(model="m", version="1", reference=many, window=1_000_000)
    assert m._counts.nbytes <= MEMORY_BUDGET_BYTES
    assert m._scores.nbytes == 4_000_000  # one float32 per input of the window


finite = st.floats(allow_nan=True, allow_infinity=True, width=32)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    x=hnp.arrays(
        np.float32, st.tuples(st.integers(1, 8), st.integers(1, 60), st.just(3)), elements=finite
    ),
    scores=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=8, max_size=8),
)
def test_hostile_values_never_break_the_monitor(x: np.ndarray, scores: list[float]) -> None:
    m = monitor(window=16)
    for _ in range(20):  # enough to fill the window and compute drift
        obs = m.observe(x, np.asarray(scores[: len(x)]))
        assert obs.low.shape == (len(x),)
        own = obs.input_drift()
        assert own is not None and np.isfinite(own).all() and (own >= 0).all()
    snap = m.snapshot()
    assert snap.drift is not None and math.isfinite(snap.drift) and snap.drift >= 0
    assert snap.low_confidence_ratio is not None and 0 <= snap.low_confidence_ratio <= 1
    assert list(snap.buckets) == sorted(snap.buckets) and snap.buckets[-1] == snap.count
    assert math.isfinite(snap.total) and 0 <= snap.total <= snap.count


@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(
        np.uint8, st.tuples(st.integers(1, 4), st.integers(1, 40), st.integers(1, 40), st.just(1))
    )
)
def test_any_image_is_binned(x: np.ndarray) -> None:
    ref = build_reference(np.zeros((1, 2, 2, 1), np.uint8), "image")
    assert ref is not None
    counts = InputBinner(ref).counts(x)
    assert counts is not None and counts.shape == (len(x), 1, 16)
    assert (counts.sum(axis=-1) >= 1).all()


def manifest(version: str, reference: Reference | None = SEQ_REF) -> SimpleNamespace:
    return SimpleNamespace(name="m", version=version, reference=reference, labels=["a", "b"])


def test_monitoring_exports_per_model_version_and_keeps_two() -> None:
    reg = CollectorRegistry()
    metrics = AgentMetrics(registry=reg)
    mon = Monitoring(window=100, metrics=metrics)
    ok = np.ones(100, bool)
    y = np.tile([[0.3, 0.7]], (100, 1))
    for version in ("1", "2", "3"):
        mon.batch(manifest(version), [None] * 100, windows(100), y, ok)  # type: ignore[list-item]
    mon.publish()
    v = reg.get_sample_value
    assert v("edge_agent_result_confidence_count", {"model": "m", "version": "1"}) is None
    labels = {"model": "m", "version": "3"}
    assert v("edge_agent_result_confidence_count", labels) == 100
    assert v("edge_agent_result_confidence_bucket", {**labels, "le": "0.7"}) == 100
    assert v("edge_agent_result_confidence_bucket", {**labels, "le": "0.6"}) == 0
    assert v("edge_agent_low_confidence_ratio", labels) == 0.0
    drift = v("edge_agent_input_drift_score", labels)
    assert drift is not None and drift < 0.1
    assert (v("edge_agent_confidence_drift_score", labels) or 0) > 1.0  # 0.7 vs 0.9
    assert v("edge_agent_monitor_window_inputs", labels) == 100
    assert v("edge_agent_monitor_window_inputs", {"model": "m", "version": "2"}) == 100


def test_unusable_rows_are_left_out() -> None:
    mon = Monitoring(window=10)
    ok = np.array([True, False, True])
    y = np.array([[0.2, 0.8], [np.nan, np.nan], [0.6, 0.4]])
    mon.batch(manifest("1"), [None] * 3, windows(3), y, ok)  # type: ignore[list-item]
    snap = mon.publish()[0]
    assert snap.count == 2 and snap.total == pytest.approx(1.4)
    mon.batch(manifest("1"), [None] * 3, windows(3), y, np.zeros(3, bool))  # type: ignore[list-item]
    assert mon.publish()[0].count == 2


def test_a_failing_monitor_never_raises_into_serving_but_delivery_failures_do() -> None:
    mon = Monitoring(window=10)
    bad_y = np.zeros((2, 0))  # max() of an empty row raises
    mon.batch(manifest("1"), [None] * 2, windows(2), bad_y, np.ones(2, bool))  # type: ignore[list-item]
    assert mon.errors == 1

    class Failing:
        def offer(self, *_: Any) -> int:
            raise DeliveryFailed("produce", RuntimeError("broker away"))

    mon.capture = Failing()  # type: ignore[assignment]
    with pytest.raises(DeliveryFailed):
        mon.batch(manifest("1"), [None], windows(1), np.array([[0.5, 0.5]]), np.ones(1, bool))  # type: ignore[list-item]
