"""Latency under load: one agent, MobileNetV2 int8 frames offered at fractions of its capacity.

The capacity is the agent's steady rate measured by the model-bound case in this run (or
measured here when that case was skipped). Each rate runs on fresh topics with a fresh
agent, warmed, then produced for 2 s unmeasured and a fixed time measured, with the device
timestamp taken at send; e2e = result ``produced_at`` - ``ts``.
"""

from __future__ import annotations

from typing import Any

from bench.assets import frames, mobilenet_models
from bench.cases.throughput import agent_starter, paced_latency
from bench.harness import Harness
from bench.kafka_io import DEVICE_LINGER_MS, consumer_floor
from bench.messages import jpeg_maker, jpeg_messages
from bench.stats import knee, median_step, percentile, rounded
from edge_agent.config import AgentConfig

#: The agent's default ``--fetch-max-wait-ms``: the floor its own setting puts under e2e.
AGENT_FETCH_MAX_WAIT_MS = AgentConfig.fetch_max_wait_ms

#: Seconds of unmeasured load at each rate before it is measured (a fresh agent's first
#: batches at a new rate are not its steady state).
UNMEASURED_SECONDS = 2.0


def run(h: Harness) -> None:
    # A broker of its own: the full run's p99 at 90% of capacity was 205-827 ms on the
    # broker shared with the cases before (16 minutes of their data in its memory) and
    # 85-110 ms on a fresh one (`--only latency`), same code and machine.
    with h.own_broker("latency"):
        _run(h)


def _run(h: Harness) -> None:
    c = h.config
    bundle = mobilenet_models(h).bundles["int8"]
    capacity = h.capacity.get("mobilenet-int8")
    if capacity is None:
        probe = h.run_preloaded(
            label="agent mobilenet int8 (capacity)",
            prefix="latency-capacity",
            messages=jpeg_messages(frames(), c.image_frames),
            start=agent_starter(h, "agent-latency-capacity", bundle),
        )
        capacity = probe.per_s
    if not capacity:
        h.errors["latency"] = "the agent's capacity could not be measured"
        return
    make = jpeg_maker(frames())
    runs: dict[float, list[dict[str, Any]]] = {f: [] for f in c.load_fractions}
    # Every rate on fresh topics with a fresh agent: the embedded broker's storage lists
    # every batch stored in a partition on each fetch that finds new data, so on one topic
    # for all rates its cost per fetch grew until it saturated its core and set the
    # agent's latency (docs/benchmarks.md, "Latency under load: the broker's core").
    # Rounds over all rates, so a slow spell of the machine hits one round of several rates
    # rather than every round of one.
    for round_ in range(c.load_repeats):
        for fraction in c.load_fractions:
            pct = round(fraction * 100)
            tag = f"{pct}%" + (f" #{round_ + 1}" if c.load_repeats > 1 else "")
            runs[fraction].append(
                paced_latency(
                    h,
                    label=f"latency {tag}",
                    prefix=f"latency-{pct}-{round_ + 1}",
                    start=agent_starter(h, f"agent-latency-{pct}-{round_ + 1}", bundle),
                    make=make,
                    rate=capacity * fraction,
                    seconds=c.load_seconds,
                    unmeasured_s=UNMEASURED_SECONDS,
                )
            )
    points: list[dict[str, Any]] = []
    for fraction, steps in runs.items():
        point = median_step(steps)
        point["fraction"] = fraction
        point["runs"] = steps
        points.append(point)
        h.progress(
            f"latency {fraction:.0%}: median of {len(steps)}: achieved {point['achieved']}/s, "
            f"e2e p50 {point['p50']} ms, p99 {point['p99']} ms (runs {point['p99_runs']})"
        )
    floor = {}
    for wait_ms in (500, AGENT_FETCH_MAX_WAIT_MS, 10):  # kafka-python's, the agent's, short
        lags = consumer_floor(h.settings, fetch_max_wait_ms=wait_ms, seconds=c.load_seconds / 2)
        floor[str(wait_ms)] = {
            "p50": rounded(percentile(lags, 50), 1),
            "p99": rounded(percentile(lags, 99), 1),
        }
        h.progress(
            f"consumer floor, fetch_max_wait_ms={wait_ms}: p50 {floor[str(wait_ms)]['p50']} ms"
        )
    k = knee(points)
    h.summary["e2e_latency_ms"] = {
        "model": "mobilenetv2-96 int8",
        "capacity_per_s": rounded(capacity, 1),
        "knee_per_s": rounded(k, 1),
        "unmeasured_s": UNMEASURED_SECONDS,
        "device_linger_ms": DEVICE_LINGER_MS,
        "consumer_floor_ms_by_fetch_max_wait_ms": floor,
        "points": [
            {
                "offered_per_s": p["offered"],
                "fraction": p["fraction"],
                "achieved_per_s": p["achieved"],
                "p50": p["p50"],
                "p99": p["p99"],
                "p99_runs": p["p99_runs"],
            }
            for p in points
        ],
    }
    h.details["latency"] = {
        "capacity_per_s": capacity,
        "knee_per_s": k,
        "points": points,
        "consumer_floor_ms_by_fetch_max_wait_ms": floor,
    }
