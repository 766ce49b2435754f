"""Latency under load: one agent, MobileNetV2 int8 frames offered at fractions of its capacity.

The capacity is the agent's steady rate measured by the model-bound case in this run (or
measured here when that case was skipped). Each rate is produced for a fixed time with the
device timestamp taken at send; e2e = result ``produced_at`` - ``ts``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.assets import frames, mobilenet_models
from bench.cases.throughput import agent_starter
from bench.harness import Harness
from bench.kafka_io import ResultsReader, consumer_floor
from bench.messages import Message, jpeg_maker, jpeg_messages
from bench.stats import knee, percentile, rounded
from edge_agent.config import AgentConfig

#: The agent's default ``--fetch-max-wait-ms``: the floor its own setting puts under e2e.
AGENT_FETCH_MAX_WAIT_MS = AgentConfig.fetch_max_wait_ms


#: Seconds of unmeasured load at a step's rate before it is measured (a fresh agent's
#: first batches at a new rate are not its steady state).
PRELOAD_SECONDS = 2.0


def run(h: Harness) -> None:
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
    points: list[dict[str, Any]] = []
    for fraction in c.load_fractions:
        step = _step(h, bundle, make, rate=capacity * fraction, fraction=fraction)
        step["fraction"] = fraction
        points.append(step)
        h.progress(
            f"latency {fraction:.0%}: achieved {step['achieved']}/s, "
            f"e2e p50 {step['p50']} ms, "
            f"p99 {step['p99']} ms"
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
        "consumer_floor_ms_by_fetch_max_wait_ms": floor,
        "points": [
            {
                "offered_per_s": p["offered"],
                "fraction": p["fraction"],
                "achieved_per_s": p["achieved"],
                "p50": p["p50"],
                "p99": p["p99"],
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


def _step(
    h: Harness,
    bundle: Path,
    make: Callable[[int, int], Message],
    *,
    rate: float,
    fraction: float,
) -> dict[str, Any]:
    """One offered rate, on fresh topics with a fresh agent.

    The embedded broker's storage lists every batch stored in a partition on each fetch
    that finds new data, so its cost per fetch grows with everything the partition ever
    received: on one topic for all steps, the broker saturated its core by the third step
    and set the agent's latency (docs/benchmarks.md, "Latency under load"). Fresh topics
    give every step the same broker.
    """
    c = h.config
    topics = h.topics(f"latency-{round(fraction * 100)}")
    with ResultsReader(h.settings, topics.output) as reader:
        agent = h.agent(name=f"agent-latency-{round(fraction * 100)}", bundle=bundle, topics=topics)
        try:
            agent.wait_ready()
            h.warm(reader, topics, make, child=agent.child)
            h.progress(
                f"latency: offering {rate:.1f}/s ({fraction:.0%} of capacity) for "
                f"{PRELOAD_SECONDS:.0f} s unmeasured, then {c.load_seconds:.0f} s"
            )
            h.paced_step(
                reader,
                topics,
                make,
                rate=rate,
                seconds=PRELOAD_SECONDS,
                check=agent.child.check_alive,
            )
            return h.paced_step(
                reader,
                topics,
                make,
                rate=rate,
                seconds=c.load_seconds,
                check=agent.child.check_alive,
            )
        finally:
            agent.child.stop()
