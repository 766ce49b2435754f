"""Restart churn (issue 12): agents killed with SIGKILL at random moments and restarted.

The property: once churn stops, every input gets a result (duplicates are counted and
reported, never losses). Each mode is one way to own partitions:

* ``static``: ``--partitions`` (static assignment, no group coordinator for assignment);
  recovers in seconds even from fast churn.
* ``group``: plain group membership. The embedded broker's group coordinator can wedge
  under fast churn (docs/streams.md), so this mode churns slowly.
* ``instance``: static membership (``--group-instance-id``, KIP-345).

The default tier runs a short static-assignment churn; the longer runs are marked slow and
long (``make test-long``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stream.replay import replay_images
from tests.integration.test_agent_delivery import answered, input_offsets

pytestmark = pytest.mark.integration
logger = logging.getLogger(__name__)

PARTITIONS = 2


@pytest.fixture
def churn(
    kafka_settings: Any,
    agent_topics: Any,
    agent_process: Any,
    topic_reader: Any,
    digits_bundles: dict[str, Path],
    record_property: Any,
) -> Callable[..., dict[str, float]]:
    """``churn(mode=, client=, cycles=, gap_s=)``: churn one agent on the digits bundle;
    the figures (inputs, duplicates, recovered_s) are returned and recorded."""

    def run(*, mode: str, client: str, cycles: int, gap_s: tuple[float, float]) -> dict[str, float]:
        topics = agent_topics(partitions=PARTITIONS)
        inp, out, dl = topics
        args = topics.args(digits_bundles["int8"], client)
        if mode == "static":
            args += ["--partitions", ",".join(str(p) for p in range(PARTITIONS))]
        elif mode == "instance":
            args += ["--group-instance-id", "churned-agent"]
        sent: dict[str, int] = {}

        def replay() -> None:
            stats = replay_images(
                kafka_settings, "digits", topic=inp, rate=300.0, repeat=4, partitions=None
            )
            sent["n"] = stats.sent

        producer = threading.Thread(target=replay, daemon=True)
        producer.start()
        rng = random.Random(12)
        for _ in range(cycles):
            agent = agent_process(*args, wait=False)
            time.sleep(rng.uniform(*gap_s))
            agent.kill()
        producer.join(120)
        started = time.monotonic()
        last = agent_process(*args)  # ready: a SIGTERM before its handlers exist would kill it
        reader = topic_reader(inp, out, dl)
        n = sent["n"]
        reader.until(
            lambda r: r.count(inp) >= n and set(answered(r, out)) >= input_offsets(r, inp),
            150,
            f"a result for each of the {n} inputs after the churn",
        )
        recovered_s = time.monotonic() - started
        done = answered(reader, out)
        assert set(done) == input_offsets(reader, inp)  # 0 inputs without a result
        duplicates = sum(c - 1 for c in done.values())
        assert last.terminate() == 0
        figures = {"inputs": n, "duplicates": duplicates, "recovered_s": round(recovered_s, 1)}
        logger.warning("churn mode=%s client=%s cycles=%d: %s", mode, client, cycles, figures)
        record_property("churn", figures)
        return figures

    return run


def test_fast_churn_with_static_assignment_recovers_in_seconds(churn: Any) -> None:
    figures = churn(mode="static", client="kafka-python", cycles=6, gap_s=(0.5, 2.5))
    assert figures["recovered_s"] < 45, figures


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.parametrize(
    ("mode", "client", "cycles", "gap_s"),
    [
        ("static", "kafka-python", 20, (0.5, 2.5)),
        ("static", "confluent", 20, (0.5, 2.5)),
        ("group", "kafka-python", 8, (6.0, 10.0)),
        ("group", "confluent", 8, (6.0, 10.0)),
        ("instance", "confluent", 8, (2.0, 4.0)),
    ],
)
def test_churn_loses_no_input(
    mode: str, client: str, cycles: int, gap_s: tuple[float, float], churn: Any
) -> None:
    churn(mode=mode, client=client, cycles=cycles, gap_s=gap_s)  # asserts no input lost
