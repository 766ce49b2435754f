"""Interop with a Kafka client nobody here wrote: confluent-kafka (librdkafka).

A device written against the documented wire format (JSON readings) with librdkafka must
be readable by our decoders, and what our replayer writes must be readable by librdkafka.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from stream.codecs import decode_sensor, headers_dict
from stream.kafka import ensure_topics
from stream.replay import replay_sensors
from stream.settings import KafkaSettings
from tests.fixtures.broker import ConsumerFactory, UniqueTopic, consume

confluent_kafka = pytest.importorskip("confluent_kafka")

pytestmark = pytest.mark.integration


def test_confluent_producer_readings_decode(
    kafka_settings: KafkaSettings, unique_topic: UniqueTopic, consumer_factory: ConsumerFactory
) -> None:
    topic = unique_topic("cf-in")
    ensure_topics(kafka_settings, [topic], partitions=2)
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": kafka_settings.bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": "zstd",
        }
    )
    delivered: list[str | None] = []
    sent: dict[str, list[list[float]]] = defaultdict(list)
    rng = np.random.default_rng(3)
    for step in range(20):
        for device in ("cf-dev-a", "cf-dev-b", "cf-dev-c"):
            values = [float(v) for v in rng.normal(size=6).astype(np.float32)]
            sent[device].append(values)
            # Written by hand from docs/wire-format.md, not with our encoder.
            value = json.dumps(
                {"device_id": device, "ts": 1_700_000_000_000 + step, "values": values}
            )
            producer.produce(
                topic,
                value=value.encode(),
                key=device.encode(),
                headers=[("content-type", b"application/json"), ("device-id", device.encode())],
                on_delivery=lambda err, _msg: delivered.append(None if err is None else str(err)),
            )
    assert producer.flush(15) == 0
    assert delivered == [None] * 60

    records = consume(consumer_factory(topic), 60)
    got: dict[str, list[np.ndarray]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        chunk = decode_sensor(r.value)
        assert chunk.device_id == r.key.decode() == headers_dict(r.headers)["device-id"]
        assert chunk.samples.shape == (1, 6)
        assert chunk.samples.dtype == np.float32
        got[chunk.device_id].append(chunk.samples[0])
    for device, rows in sent.items():
        np.testing.assert_array_equal(np.stack(got[device]), np.asarray(rows, dtype=np.float32))


def test_confluent_consumer_reads_the_replayer(
    kafka_settings: KafkaSettings, unique_topic: UniqueTopic
) -> None:
    topic = unique_topic("cf-out")
    stats = replay_sensors(kafka_settings, "basic-motions", topic=topic, rate=0, limit=5)
    assert stats.sent == 500
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": kafka_settings.bootstrap_servers,
            "group.id": f"{topic}-reader",
            "enable.auto.commit": False,
        }
    )
    try:
        parts = [
            confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
            for p in range(4)
        ]
        consumer.assign(parts)
        messages: list[Any] = []
        deadline = time.monotonic() + 30
        while len(messages) < 500 and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=1.0):
                assert msg.error() is None, msg.error()
                messages.append(msg)
    finally:
        consumer.close()
    assert len(messages) == 500
    per_device: dict[str, list[int]] = defaultdict(list)
    for msg in messages:
        headers = dict(msg.headers() or [])
        data = json.loads(msg.value())
        assert data["device_id"] == msg.key().decode() == headers["device-id"].decode()
        assert len(data["values"]) == 6
        assert headers["label"].decode() in {"badminton", "running", "standing", "walking"}
        per_device[data["device_id"]].append(data["ts"])
    assert sorted(per_device) == [f"bm-test-{i:03d}" for i in range(5)]
    for ts in per_device.values():
        assert len(ts) == 100
        assert all(b > a for a, b in zip(ts, ts[1:], strict=False))
