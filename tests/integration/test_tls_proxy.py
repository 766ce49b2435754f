"""Kafka over TLS, configured only through KafkaSettings, via a TLS-terminating proxy.

Tansu cannot serve TLS itself, so a dedicated broker advertises the proxy's address: every
connection a client makes (bootstrap, then the broker from metadata) goes through TLS.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import TopicPartition

from stream.broker import EmbeddedBroker, free_port
from stream.exceptions import BrokerError
from stream.kafka import ensure_topics, list_topics, make_consumer, make_producer
from stream.settings import KafkaSettings
from tests.fixtures.broker import UniqueTopic, consume
from tests.fixtures.tls_proxy import TlsFiles, TlsProxy, make_ca_and_server_cert

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class TlsBroker:
    proxy: TlsProxy
    broker: EmbeddedBroker
    files: TlsFiles

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.proxy.port}"


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    files = make_ca_and_server_cert(tmp_path_factory.mktemp("tls"))
    broker_port = free_port()
    proxy = TlsProxy(
        upstream=("127.0.0.1", broker_port), certfile=files.server_cert, keyfile=files.server_key
    )
    with proxy:
        broker = EmbeddedBroker(port=broker_port, advertised=f"127.0.0.1:{proxy.port}")
        with broker:
            yield TlsBroker(proxy, broker, files)


def _ssl_settings(tls: TlsBroker, cafile: Path) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=tls.bootstrap,
        security_protocol="SSL",
        ssl_cafile=str(cafile),
        session_timeout_ms=6000,
    )


def test_produce_and_consume_through_tls(tls_broker: TlsBroker, unique_topic: UniqueTopic) -> None:
    settings = _ssl_settings(tls_broker, tls_broker.files.ca_cert)
    topic = unique_topic("tls")
    before = tls_broker.proxy.connections
    assert ensure_topics(settings, [topic], partitions=2) == [topic]
    assert list_topics(settings)[topic] == 2

    producer = make_producer(settings)
    try:
        # The client learns the broker's address from metadata: it must be the proxy.
        brokers = producer._metadata.brokers()
        assert {(b.host, b.port) for b in brokers} == {("127.0.0.1", tls_broker.proxy.port)}
        futures = [
            producer.send(topic, f"v{i}".encode(), key=f"k{i % 3}".encode(), headers=[("n", b"1")])
            for i in range(30)
        ]
        producer.flush(timeout=15)
        assert all(f.succeeded() for f in futures)
    finally:
        producer.close(timeout=10)

    consumer = make_consumer(settings, group_id=None)
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(2)])
        records = consume(consumer, 30)
    finally:
        consumer.close()
    assert sorted(r.value for r in records) == sorted(f"v{i}".encode() for i in range(30))
    assert all(r.headers == [("n", b"1")] for r in records)
    assert tls_broker.proxy.connections > before


def test_consumer_group_through_tls(tls_broker: TlsBroker, unique_topic: UniqueTopic) -> None:
    settings = _ssl_settings(tls_broker, tls_broker.files.ca_cert)
    topic = unique_topic("tls-group")
    ensure_topics(settings, [topic], partitions=1)
    producer = make_producer(settings)
    try:
        for i in range(5):
            producer.send(topic, f"g{i}".encode(), key=b"k")
        producer.flush(timeout=15)
    finally:
        producer.close(timeout=10)
    consumer = make_consumer(settings, topic, group_id=f"{topic}-g")
    try:
        records = consume(consumer, 5)
        consumer.commit()
        assert consumer.committed(TopicPartition(topic, 0)) == 5
    finally:
        consumer.close()
    assert [r.value for r in records] == [f"g{i}".encode() for i in range(5)]


def test_untrusted_certificate_is_refused(tls_broker: TlsBroker, tmp_path: Path) -> None:
    other_ca = make_ca_and_server_cert(tmp_path / "other", common_name="someone-else").ca_cert
    settings = _ssl_settings(tls_broker, other_ca)
    before = tls_broker.proxy.connections
    with pytest.raises(BrokerError) as err:
        make_producer(settings, bootstrap_timeout_ms=2000)
    assert f"127.0.0.1:{tls_broker.proxy.port} (SSL)" in str(err.value)
    assert tls_broker.proxy.connections == before  # nothing was forwarded to the broker


def test_plaintext_client_cannot_talk_to_the_tls_port(tls_broker: TlsBroker) -> None:
    settings = KafkaSettings(bootstrap_servers=tls_broker.bootstrap)
    with pytest.raises(BrokerError, match="no broker answered"):
        make_producer(settings, bootstrap_timeout_ms=2000)
