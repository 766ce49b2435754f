"""Pure arithmetic of the benchmark: percentiles, steady-state throughput, ratios, goals, knee.

No Kafka, no TensorFlow: these are unit-tested on their own (tests/unit/test_bench_stats.py).
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

#: Fraction of the results dropped at each end of a run before measuring a rate: the
#: start (consumer group join, first fetch, caches) and the tail (last partial batches).
DEFAULT_TRIM = 0.1

Op = Literal[">=", "<"]

#: A headline whose alternations spread wider than this ((max - min) / median of the
#: per-alternation values) is judged ``unstable``, not pass or MISS: at 0.2 the median of
#: three alternations is within about +-10% of the middle of its range, the agreement the
#: quick mode is meant to have between two runs; anything wider cannot decide a 0.9 line.
MAX_SPREAD = 0.2


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


def paired_ratios(
    numerators: Sequence[float | None], denominators: Sequence[float | None]
) -> list[float]:
    """The ratio of each alternation (``numerators[i] / denominators[i]``), the pairs with
    a side missing dropped: two runs back to back share the machine's load, so their ratio
    moves less than the ratio of two medians taken minutes apart."""
    out = []
    for n, d in zip(numerators, denominators, strict=True):
        r = ratio(n, d)
        if r is not None:
            out.append(r)
    return out


def spread(values: Iterable[float | None], digits: int = 3) -> dict[str, Any]:
    """The runs (missing ones dropped), their median, extremes, and the relative spread
    ``(max - min) / median`` (None without values or with a median of 0)."""
    data = [float(v) for v in values if v is not None]
    med = median(data)
    return {
        "runs": [round(v, digits) for v in data],
        "median": rounded(med, digits),
        "min": rounded(min(data), digits) if data else None,
        "max": rounded(max(data), digits) if data else None,
        "spread": rounded((max(data) - min(data)) / med, 3) if data and med else None,
    }


@dataclass(frozen=True)
class Turn:
    """One contender's turn on a shared core: it ran from ``t0`` to ``t1`` (epoch seconds)
    while the others were stopped; ``before``/``after``: its own work counter around the
    turn (raw LiteRT's frames; unused for the agent, whose results carry their time)."""

    who: str
    t0: float
    t1: float
    before: int = 0
    after: int = 0


def turn_rates(
    turns: Sequence[Turn], result_ms: Sequence[float], *, agent: str = "agent"
) -> dict[str, Any]:
    """Rates of contenders that took turns on one core (``bench.cases.throughput``).

    The agent's rate: its results whose ``produced_at`` (epoch ms, truncated) falls within
    its turns, over those turns' length; its turn holding the last result and any after it
    are dropped (it may have run out of work there). The others' rates: counter gains over
    turn lengths, for their turns within the agent's kept ones (first start to last end),
    so every contender saw the same stretch of the machine's ups and downs. Raises
    ValueError when fewer than two agent turns remain.
    """
    times = sorted(result_ms)
    mine = [t for t in turns if t.who == agent]
    if times:
        last = times[-1]
        mine = [t for t in mine if math.floor(t.t1 * 1000.0) < last]
    if len(mine) < 2:
        msg = f"only {len(mine)} full agent turn(s): give the agent more work per run"
        raise ValueError(msg)
    counted = 0
    for t in mine:
        lo = bisect.bisect_left(times, math.floor(t.t0 * 1000.0))
        hi = bisect.bisect_right(times, math.floor(t.t1 * 1000.0))
        counted += hi - lo
    seconds = sum(t.t1 - t.t0 for t in mine)
    start, end = mine[0].t0, mine[-1].t1
    out: dict[str, Any] = {
        agent: counted / seconds,
        "agent_turns": len(mine),
        "agent_seconds": round(seconds, 3),
        "agent_results": counted,
    }
    for who in sorted({t.who for t in turns} - {agent}):
        theirs = [t for t in turns if t.who == who and t.t0 >= start and t.t1 <= end]
        busy = sum(t.t1 - t.t0 for t in theirs)
        out[who] = sum(t.after - t.before for t in theirs) / busy if busy > 0 else None
    return out


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

    def as_dict(self, value: float | None, runs: dict[str, Any] | None = None) -> dict[str, Any]:
        """The judgement; ``runs`` is the :func:`spread` of the value's alternations (None
        for a single measurement): wider than :data:`MAX_SPREAD` with the target inside the
        range (its lowest and highest alternation judged differently), the status is
        ``unstable`` and ``met`` None (``median_met`` keeps what the median alone says). A
        wide range wholly on one side of the target still decides: every alternation
        agrees."""
        met = self.judge(value)
        width = (runs or {}).get("spread")
        lo, hi = (runs or {}).get("min"), (runs or {}).get("max")
        straddles = lo is None or hi is None or self.judge(lo) != self.judge(hi)
        unstable = met is not None and width is not None and width > MAX_SPREAD and straddles
        if met is None:
            status = "not measured"
        elif unstable:
            status = "unstable"
        else:
            status = "pass" if met else "MISS"
        return {
            "key": self.key,
            "description": self.description,
            "target": f"{self.op} {self.target:g}",
            "value": rounded(value),
            "min": (runs or {}).get("min"),
            "max": (runs or {}).get("max"),
            "runs": len((runs or {}).get("runs") or []) or (None if value is None else 1),
            "spread": width,
            "met": None if unstable else met,
            "median_met": met,
            "status": status,
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


def judge_goals(
    summary: dict[str, Any], spreads: dict[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Each goal with the summary's measured value, the spread of its alternations
    (``spreads[key]``, when it had several) and pass / MISS / unstable / not measured."""
    out = []
    for goal in GOALS:
        value = summary.get(goal.key)
        runs = (spreads or {}).get(goal.key)
        out.append(goal.as_dict(value if isinstance(value, int | float) else None, runs))
    return out


def median_step(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One offered rate measured several times: the median of each of ``offered``,
    ``achieved``, ``p50``, ``p90`` and ``p99`` over the runs (missing values dropped), and
    every run's ``p99`` (``p99_runs``) and ``achieved`` (``achieved_runs``)."""
    out: dict[str, Any] = {}
    for key in ("offered", "achieved", "p50", "p90", "p99"):
        out[key] = rounded(median(r[key] for r in runs if r.get(key) is not None), 2)
    out["p99_runs"] = [r.get("p99") for r in runs]
    out["achieved_runs"] = [r.get("achieved") for r in runs]
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
