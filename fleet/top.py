"""``edgeinfer top``: a live fleet view built from the agents' Prometheus endpoints.

Each refresh scrapes every agent's ``/metrics`` and ``/readyz``, turns counters into rates
between two scrapes and histograms into quantiles (the same interpolation as PromQL's
``histogram_quantile``), and prints one row per agent.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from fleet.scrape import base_url, families, http_get
from stream.exceptions import ConfigError

logger = logging.getLogger(__name__)

PREFIX = "edge_agent_"


@dataclass
class Scrape:
    """One agent's metrics at one moment (already summed over label sets)."""

    url: str
    at: float
    up: bool
    ready: bool = False
    consumed: float = 0.0
    produced: float = 0.0
    deadletters: float = 0.0
    lag: float = 0.0
    windows_open: float = 0.0
    partitions_assigned: float = 0.0
    model: str = "-"
    version: str = "-"
    agent_id: str = "-"
    #: The agent runs unsigned bundles too (--allow-unsigned).
    unsigned_allowed: bool = False
    #: cumulative buckets: upper bound -> count, per histogram name
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)
    error: str = ""
    #: The candidate version in shadow (edge_agent_shadow_candidate_info), if any.
    shadow_version: str | None = None
    #: Per candidate version: agreement ratio, and accuracy per role (candidate, serving).
    shadow_agreement: dict[str, float] = field(default_factory=dict)
    shadow_accuracy: dict[tuple[str, str], float] = field(default_factory=dict)


#: Metrics summed over their label sets: name after the prefix -> :class:`Scrape` field.
_SUMMED = {
    "messages_consumed_total": "consumed",
    "results_produced_total": "produced",
    "deadletters_total": "deadletters",
    "consumer_lag": "lag",
    "windows_open": "windows_open",
    "partitions_assigned": "partitions_assigned",
}


def parse_metrics(text: str, *, url: str, at: float) -> Scrape:
    """Sum the agent's metrics from the Prometheus text exposition format."""
    s = Scrape(url=url, at=at, up=True)
    for family in families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            summed = _SUMMED.get(name[len(PREFIX) :]) if name.startswith(PREFIX) else None
            if summed is not None:
                setattr(s, summed, getattr(s, summed) + value)
            elif name == f"{PREFIX}ready":
                s.ready = value >= 1
            elif name == f"{PREFIX}model_info" and value >= 1:
                s.model = labels.get("model", "-")
                s.version = labels.get("version", "-")
            elif name == f"{PREFIX}info":
                s.agent_id = labels.get("agent_id", s.agent_id)
            elif name == f"{PREFIX}model_unsigned_allowed":
                s.unsigned_allowed = value >= 1
            elif name == f"{PREFIX}shadow_candidate_info" and value >= 1:
                s.shadow_version = labels.get("version", "-")
            elif name == f"{PREFIX}shadow_agreement_ratio":
                s.shadow_agreement[labels.get("version", "-")] = value
            elif name == f"{PREFIX}shadow_accuracy_ratio":
                s.shadow_accuracy[(labels.get("version", "-"), labels.get("role", "-"))] = value
            elif name.endswith("_bucket") and name.startswith(PREFIX):
                hist = name[len(PREFIX) : -len("_bucket")]
                bound = float(labels.get("le", "inf"))
                per = s.buckets.setdefault(hist, {})
                per[bound] = per.get(bound, 0.0) + value
    return s


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Quantile from cumulative buckets (upper bound -> count), as PromQL interpolates it."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return bounds[-1]


def bucket_delta(new: dict[float, float], old: dict[float, float]) -> dict[float, float]:
    """Per-interval buckets from two cumulative scrapes (a restart resets to ``new``)."""
    delta = {b: new[b] - old.get(b, 0.0) for b in new}
    if any(v < 0 for v in delta.values()):
        return dict(new)
    return delta


def scrape(url: str, timeout_s: float = 2.0) -> Scrape:
    """Scrape ``url`` (``host:port`` or ``http://host:port``) once."""
    at = time.monotonic()
    status, text = http_get(f"{base_url(url)}/metrics", timeout=timeout_s)
    if status != 200:
        return Scrape(url=url, at=at, up=False, error=text if status == 0 else f"HTTP {status}")
    return parse_metrics(text, url=url, at=at)


@dataclass(frozen=True)
class Row:
    agent: str
    up: bool
    ready: bool
    model: str
    version: str
    in_rate: float
    out_rate: float
    consumed: float
    produced: float
    deadletters: float
    lag: float
    infer_p50_ms: float | None
    infer_p99_ms: float | None
    e2e_p50_ms: float | None
    e2e_p99_ms: float | None
    unsigned_allowed: bool = False
    #: ``SHADOW v2 agree 0.91 acc 0.97/0.62`` while a candidate runs in shadow, else "".
    shadow: str = ""


def shadow_summary(s: Scrape) -> str:
    """The candidate in shadow and how it compares (agreement; accuracy candidate/serving)."""
    v = s.shadow_version
    if v is None:
        return ""
    parts = [f"SHADOW v{v}"]
    if v in s.shadow_agreement:
        parts.append(f"agree {s.shadow_agreement[v]:.2f}")
    cand, serv = s.shadow_accuracy.get((v, "candidate")), s.shadow_accuracy.get((v, "serving"))
    if cand is not None and serv is not None:
        parts.append(f"acc {cand:.2f}/{serv:.2f}")
    return " ".join(parts)


def make_row(new: Scrape, old: Scrape | None) -> Row:
    dt = (new.at - old.at) if old is not None and old.up else 0.0

    def rate(a: float, b: float) -> float:
        return max(a - b, 0.0) / dt if dt > 0 else 0.0

    def q(hist: str, quantile: float) -> float | None:
        cur = new.buckets.get(hist, {})
        if old is not None and old.up and hist in old.buckets:
            d = bucket_delta(cur, old.buckets[hist])
            if max(d.values(), default=0.0) > 0:
                cur = d
        v = histogram_quantile(quantile, cur)
        return None if v is None else v * 1000.0

    return Row(
        agent=new.agent_id if new.agent_id != "-" else new.url,
        up=new.up,
        ready=new.ready,
        model=new.model,
        version=new.version,
        in_rate=rate(new.consumed, old.consumed) if old else 0.0,
        out_rate=rate(new.produced, old.produced) if old else 0.0,
        consumed=new.consumed,
        produced=new.produced,
        deadletters=new.deadletters,
        lag=new.lag,
        infer_p50_ms=q("inference_duration_seconds", 0.5),
        infer_p99_ms=q("inference_duration_seconds", 0.99),
        e2e_p50_ms=q("e2e_latency_seconds", 0.5),
        e2e_p99_ms=q("e2e_latency_seconds", 0.99),
        unsigned_allowed=new.unsigned_allowed,
        shadow=shadow_summary(new),
    )


def _fmt(v: float | None, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def render(rows: Sequence[Row], *, title: str = "edgeinfer top") -> str:
    head = (
        f"{'agent':<22} {'st':<5} {'model':<16} {'version':<15} {'in/s':>8} {'out/s':>8} "
        f"{'results':>8} {'dead':>6} {'lag':>6} {'inf p50':>8} {'inf p99':>8} "
        f"{'e2e p50':>8} {'e2e p99':>8}"
    )
    lines = [title, head, "-" * len(head)]
    for r in rows:
        state = "ready" if r.ready else ("up" if r.up else "DOWN")
        lines.append(
            f"{r.agent[:22]:<22} {state:<5} {r.model[:16]:<16} {r.version[:15]:<15} "
            f"{r.in_rate:>8.1f} {r.out_rate:>8.1f} {r.produced:>8.0f} {r.deadletters:>6.0f} "
            f"{r.lag:>6.0f} {_fmt(r.infer_p50_ms):>8} {_fmt(r.infer_p99_ms):>8} "
            f"{_fmt(r.e2e_p50_ms):>8} {_fmt(r.e2e_p99_ms):>8}"
            + ("  UNSIGNED" if r.unsigned_allowed else "")
            + (f"  {r.shadow}" if r.shadow else "")
        )
    tot_in = sum(r.in_rate for r in rows)
    tot_out = sum(r.out_rate for r in rows)
    lines.append("-" * len(head))
    lines.append(
        f"fleet: {sum(r.up for r in rows)}/{len(rows)} up, in {tot_in:.1f}/s, "
        f"out {tot_out:.1f}/s, dead letters {sum(r.deadletters for r in rows):.0f} "
        "(latencies in ms)"
    )
    unsigned = sum(r.unsigned_allowed for r in rows)
    if unsigned:
        lines.append(
            f"UNSIGNED: {unsigned} agent(s) run unsigned bundles (--allow-unsigned): anyone who "
            "can write their model source runs code of their choice there"
        )
    return "\n".join(lines)


class FleetView:
    """Keeps the previous scrape of each agent so rates cover the last interval."""

    def __init__(self, urls: Iterable[str]) -> None:
        self.urls = list(urls)
        if not self.urls:
            msg = "no agents to watch: pass --agents host:port[,host:port...]"
            raise ConfigError(msg)
        self._last: dict[str, Scrape] = {}

    def refresh(self) -> list[Row]:
        rows = []
        for url in self.urls:
            new = scrape(url)
            rows.append(make_row(new, self._last.get(url)))
            self._last[url] = new
        return rows


def run_top(
    urls: Sequence[str],
    *,
    interval_s: float = 2.0,
    iterations: int | None = None,
    out: TextIO = sys.stdout,
) -> None:
    view = FleetView(urls)
    clear = out.isatty()
    n = 0
    view.refresh()
    while iterations is None or n < iterations:
        time.sleep(interval_s)
        text = render(view.refresh(), title=f"edgeinfer top  ({time.strftime('%H:%M:%S')})")
        out.write(("\x1b[H\x1b[2J" if clear else "") + text + "\n")
        out.flush()
        n += 1
