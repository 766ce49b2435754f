"""Pure arithmetic of the benchmark: percentiles, steady-state throughput, ratios, goals, knee.

No Kafka, no TensorFlow: these are unit-tested on their own (tests/unit/test_bench_stats.py).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

#: Fraction of the results dropped at each end of a run before measuring a rate: the
#: start (consumer group join, first fetch, caches) and the tail (last partial batches).
DEFAULT_TRIM = 0.1

Op = Literal[">=", "<"]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) with linear interpolation, as numpy's default.

    None for an empty sequence.
    """
    if not 0 <= q <= 100:
        msg = f"q must be in [0, 100], got {q}"
        raise ValueError(msg)
    if not values:
        return None
    data = sorted(float(v) for v in values)
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    frac = pos - lo
    return data[lo] + (data[hi] - data[lo]) * frac


def median(values: Iterable[float]) -> float | None:
    """The median (the mean of the middle two for an even count); None for no values."""
    data = [float(v) for v in values]
    return statistics.median(data) if data else None


def steady_rate(times_ms: Sequence[float], *, trim: float = DEFAULT_TRIM) -> float | None:
    """Events per second over the middle of a run, from each event's time in milliseconds.

    The times are sorted; ``trim`` of them are dropped at each end; the rate is the number
    of intervals between the first and last kept event over their distance. None when
    fewer than 3 events remain or they all share one millisecond.
    """
    if not 0 <= trim < 0.5:
        msg = f"trim must be in [0, 0.5), got {trim}"
        raise ValueError(msg)
    data = sorted(float(t) for t in times_ms)
    cut = int(len(data) * trim)
    kept = data[cut : len(data) - cut] if cut else data
    if len(kept) < 3:
        return None
    span_s = (kept[-1] - kept[0]) / 1000.0
    if span_s <= 0:
        return None
    return (len(kept) - 1) / span_s


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator <= 0."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True, kw_only=True)
class Goal:
    """A target from the issue, judged against a measured value (never assumed)."""

    key: str
    description: str
    op: Op
    target: float

    def judge(self, value: float | None) -> bool | None:
        """True when met, False when missed, None when not measured."""
        if value is None:
            return None
        return value >= self.target if self.op == ">=" else value < self.target

    def as_dict(self, value: float | None) -> dict[str, Any]:
        met = self.judge(value)
        return {
            "key": self.key,
            "description": self.description,
            "target": f"{self.op} {self.target:g}",
            "value": rounded(value),
            "met": met,
            "status": "not measured" if met is None else ("pass" if met else "MISS"),
        }


GOALS: tuple[Goal, ...] = (
    Goal(
        key="agent_vs_raw_mobilenet_int8",
        description="agent / raw LiteRT throughput, MobileNetV2 int8 (model-bound)",
        op=">=",
        target=0.9,
    ),
    Goal(
        key="agent_vs_raw_mobilenet_float32",
        description="agent / raw LiteRT throughput, MobileNetV2 float32 (model-bound)",
        op=">=",
        target=0.9,
    ),
    Goal(
        key="agent_vs_passthrough_digits",
        description="agent / passthrough throughput, digits CNN (client-bound)",
        op=">=",
        target=0.7,
    ),
    Goal(
        key="agent_vs_passthrough_sensor",
        description="agent / passthrough throughput, BasicMotions sensor model (client-bound)",
        op=">=",
        target=0.7,
    ),
    Goal(
        key="agent_vs_naive_sensor",
        description="agent / naive Keras loop throughput, sensor chunks",
        op=">=",
        target=10.0,
    ),
    Goal(
        key="cold_start_s",
        description="agent cold start: process start to /readyz 200 (s)",
        op="<",
        target=1.0,
    ),
    Goal(key="peak_rss_mb", description="agent peak RSS (MB)", op="<", target=100.0),
    Goal(
        key="scale_out_2_vs_1",
        description="two agents in one group / one agent, 2-partition topic",
        op=">=",
        target=1.5,
    ),
    Goal(
        key="monitoring_cost_share_digits",
        description="monitoring + sample capture work per input / time per input at the "
        "client-bound rate, digits",
        op="<",
        target=0.05,
    ),
    Goal(
        key="monitoring_cost_share_sensor",
        description="monitoring + sample capture work per input / time per input at the "
        "client-bound rate, sensor windows",
        op="<",
        target=0.05,
    ),
)


def judge_goals(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal with the summary's measured value and pass / MISS / not measured."""
    out = []
    for goal in GOALS:
        value = summary.get(goal.key)
        out.append(goal.as_dict(value if isinstance(value, int | float) else None))
    return out


def knee(
    points: Sequence[dict[str, Any]], *, keep_up: float = 0.95, p99_growth: float = 3.0
) -> float | None:
    """The highest offered rate the system still keeps up with, on a latency-vs-load curve.

    ``points`` are dicts with ``offered`` (msg/s), ``achieved`` (msg/s) and ``p99`` (ms),
    in any order. A rate is kept up with when the achieved rate is at least ``keep_up`` of
    the offered one and p99 is at most ``p99_growth`` times the p99 at the lowest rate.
    The knee is the highest rate below the first one that fails (None if the lowest fails).
    """
    ordered = sorted(
        (p for p in points if p.get("offered") and p.get("p99") is not None),
        key=lambda p: float(p["offered"]),
    )
    if not ordered:
        return None
    base = max(float(ordered[0]["p99"]), 1.0)
    best: float | None = None
    for p in ordered:
        offered = float(p["offered"])
        achieved = float(p.get("achieved") or 0.0)
        if achieved < keep_up * offered or float(p["p99"]) > p99_growth * base:
            break
        best = offered
    return best
