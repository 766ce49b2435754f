"""A real Prometheus (Debian's package) scrapes a running agent; PromQL sees what was sent.

The test sends digits images at a fixed rate through the agent, lets Prometheus scrape the
agent's /metrics every second, and checks three PromQL answers against values the test can
predict: the result count (exact), the consumed rate in the middle of the stream (the
replay rate), and the e2e latency p99 (the true p99 computed from the results themselves
must fall in the same histogram bucket as Prometheus's estimate).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fleet.prometheus import ALERT_RULES, PrometheusServer, ScrapeJob
from stream import codecs
from stream.kafka import make_consumer
from stream.replay import replay_images
from tests.fixtures.agent import wait_until

pytestmark = pytest.mark.integration

RATE = 40.0  # images per second offered
REPEAT = 2  # passes over the digits test split (450 images): 22.5 s of stream
IMAGES = 450 * REPEAT


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    """Start a real Prometheus (fleet.prometheus, the drift demo's) scraping one target
    every second as job ``edge-agent``, with the shipped alert rules loaded."""
    if shutil.which("prometheus") is None:
        pytest.fail("the prometheus server is not installed: run `make system-deps`")
    started: list[PrometheusServer] = []

    def start(target: str) -> PrometheusServer:
        prom = PrometheusServer(
            tmp_path / f"prometheus-{len(started)}",
            jobs=[ScrapeJob("edge-agent", (target,))],
            rules_text=ALERT_RULES.read_text(),
        )
        started.append(prom)
        prom.start()
        return prom

    yield start
    for prom in started:
        prom.stop()


def test_prometheus_scrapes_the_agent_and_promql_matches_what_was_sent(
    kafka_settings: Any,
    agent_topics: Any,
    agent_process: Any,
    digits_bundles: dict[str, Path],
    prometheus: Any,
) -> None:
    topics = agent_topics(partitions=2)
    inp, out = topics.input, topics.output
    agent = agent_process(*topics.args(digits_bundles["int8"]))
    prom = prometheus(f"127.0.0.1:{agent.port}")
    # the shipped rules load in a real server (promtool tests them in tests/unit)
    assert {"EdgeAgentDown", "EdgeModelRolledBack"} <= prom.alert_names()
    wait_until(
        lambda: prom.scalar('up{job="edge-agent"}') == 1.0, 30, "Prometheus to scrape the agent"
    )

    t0 = time.time()
    stats = replay_images(
        kafka_settings, "digits", topic=inp, rate=RATE, repeat=REPEAT, partitions=None
    )
    t1 = time.time()
    assert stats.sent == IMAGES

    # Every image answered, as counted by the agent and seen by Prometheus.
    wait_until(
        lambda: prom.scalar("sum(edge_agent_results_produced_total)") == IMAGES,
        60,
        f"Prometheus to see {IMAGES} results",
    )
    assert prom.scalar("sum(edge_agent_messages_consumed_total)") == IMAGES
    assert prom.scalar("sum(edge_agent_deadletters_total)") in (None, 0.0)

    # The consumed rate over an 8 s window well inside the stream is the offered rate (the
    # window ends 5 s before the stream does and starts 7 s after it began, past the group
    # join).
    assert t1 - t0 > 18, f"the replay took {t1 - t0:.1f} s; it must outlast the rate window"
    rate = prom.scalar("sum(rate(edge_agent_messages_consumed_total[8s]))", at=t1 - 5)
    assert rate is not None
    assert rate == pytest.approx(RATE, rel=0.3), f"rate {rate:.1f}/s vs offered {RATE}/s"

    # The e2e p99 estimate lands in the bucket that holds the true p99 of the results.
    consumer = make_consumer(kafka_settings, out, group_id=None)
    latencies: list[float] = []
    deadline = time.monotonic() + 60
    while len(latencies) < IMAGES and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            for rec in records:
                latencies.append(codecs.decode_result(rec.value).latency_ms["e2e"] / 1000.0)
    consumer.close()
    assert len(latencies) == IMAGES
    true_p99 = float(np.percentile(latencies, 99))
    est_p99 = prom.scalar(
        "histogram_quantile(0.99, sum by (le) (edge_agent_e2e_latency_seconds_bucket))"
    )
    assert est_p99 is not None and est_p99 > 0
    bounds = sorted(
        float(r["metric"]["le"])
        for r in prom.query("sum by (le) (edge_agent_e2e_latency_seconds_bucket)")
    )

    def bucket(v: float) -> float:
        return next(b for b in bounds if v <= b or math.isinf(b))

    # Prometheus ranks at 0.99 * n = 445.5: the order statistics around it bound the bucket.
    ordered = sorted(latencies)
    rank = int(0.99 * IMAGES)
    allowed = {bucket(v) for v in ordered[rank - 1 : rank + 2]}
    assert bucket(est_p99) in allowed, (
        f"PromQL p99 {est_p99:.4f} s is in bucket le={bucket(est_p99)}, but the results' "
        f"p99 {true_p99:.4f} s is in {sorted(allowed)} (buckets {bounds})"
    )
    assert agent.terminate() == 0
