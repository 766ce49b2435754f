"""The benchmark's simulated devices: paced sends reach the broker whole and stamped.

Latency under load is measured from the ``ts`` header a device stamps at send to the
agent's ``produced_at``; ``produce_paced`` must deliver every message, in order, with a
``ts`` inside the step's window on either client (librdkafka when installed, kafka-python
as the fallback).
"""

from __future__ import annotations

import math
import time
from unittest import mock

import pytest

import bench.kafka_io as kio
from bench.messages import Message
from stream.kafka import ensure_topics, make_consumer
from stream.settings import KafkaSettings
from tests.fixtures.broker import UniqueTopic, consume

pytestmark = pytest.mark.integration


def _make(i: int, ts: int) -> Message:
    return Message(f"dev-{i % 3}".encode(), f"frame-{i}".encode(), [("ts", str(ts).encode())])


@pytest.mark.parametrize("client", ["confluent", "kafka-python"])
def test_paced_sends_arrive_in_order_with_their_send_time(
    client: str, kafka_settings: KafkaSettings, unique_topic: UniqueTopic
) -> None:
    topic = unique_topic(f"paced-{client}")
    ensure_topics(kafka_settings, [topic], partitions=1)
    t0 = math.floor(time.time() * 1000.0)
    with mock.patch.object(kio, "resolve_client", return_value=client):
        run = kio.produce_paced(kafka_settings, topic, _make, rate=100.0, seconds=1.0)
    sent, rate = run.sent, run.rate
    t1 = time.time() * 1000.0
    assert sent == 100
    assert 50.0 < rate < 200.0, rate
    assert 0.0 <= run.late_max_ms < 1000.0
    consumer = make_consumer(kafka_settings, topic, group_id=None, auto_offset_reset="earliest")
    try:
        records = consume(consumer, sent)
    finally:
        consumer.close()
    assert [r.value for r in records] == [f"frame-{i}".encode() for i in range(sent)]
    stamps = [int(dict(r.headers)["ts"]) for r in records]
    assert all(t0 <= ts <= t1 for ts in stamps), (t0, stamps[:3], t1)
    assert stamps == sorted(stamps)
    # Paced, not sent in one burst: the stamps span most of the second.
    assert stamps[-1] - stamps[0] >= 900
