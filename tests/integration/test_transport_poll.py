"""The agent's consumer poll returns what is there, not what its timeout lets pile up.

The pipeline polls with a long timeout (200 ms) while its batch is empty. librdkafka's
``consume(n, timeout)`` waits for ``n`` messages or the whole timeout, so an input reaching
an idle agent waited up to the full timeout before the agent saw it (issue 17, latency).
Both transports must hand over an arriving record at once: here the timeout is an hour,
and the poll has to return the record long before that.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from edge_agent.transport import ConsumerOptions, make_transport
from stream.kafka import ensure_topics, make_producer
from stream.settings import KafkaSettings
from tests.fixtures.agent import CLIENTS
from tests.fixtures.broker import UniqueTopic

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


def _options(topic: str) -> ConsumerOptions:
    return ConsumerOptions(
        group_id=f"{topic}-group",
        client_id="poll-test",
        max_poll_records=256,
        fetch_max_wait_ms=50,
        max_message_bytes=1 << 20,
        max_poll_interval_ms=300_000,
        partitions=(0,),
    )


def _values(polled: dict[int, list[Any]]) -> list[bytes]:
    return [r.value for records in polled.values() for r in records]


@pytest.mark.parametrize("client", CLIENTS)
def test_poll_hands_over_an_arriving_record_without_waiting_for_its_timeout(
    client: str, kafka_settings: KafkaSettings, unique_topic: UniqueTopic
) -> None:
    topic = unique_topic("poll")
    ensure_topics(kafka_settings, [topic], partitions=1)
    producer = make_producer(kafka_settings)
    consumer = make_transport(client, kafka_settings).consumer(
        topic, _options(topic), on_assigned=lambda _p: None, on_revoked=lambda _p: None
    )
    poller: threading.Thread | None = None
    try:
        # Already there: several records in one poll, at most max_records of them.
        for i in range(5):
            producer.send(topic, f"early-{i}".encode(), partition=0)
        producer.flush(30)
        got: list[bytes] = []
        for _ in range(100):
            got += _values(consumer.poll(500, 3))
            if len(got) >= 5:
                break
        assert got == [f"early-{i}".encode() for i in range(5)]

        # Caught up: a poll with an hour's timeout, then one record arrives.
        result: dict[str, Any] = {}
        poller = threading.Thread(
            target=lambda: result.update(polled=consumer.poll(HOUR_MS, 256)), daemon=True
        )
        poller.start()
        producer.send(topic, b"late", partition=0)
        producer.flush(30)
        poller.join(60)
        assert not poller.is_alive(), "poll kept waiting for its timeout with a record there"
        assert _values(result["polled"]) == [b"late"]
    finally:
        producer.close(5)
        if poller is None or not poller.is_alive():  # a stuck poll would block close()
            consumer.close()
