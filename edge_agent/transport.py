"""The agent's Kafka transport: one consumer and one producer behind a small interface.

The pipeline (``edge_agent.pipeline``) speaks only to :class:`Consumer` and
:class:`Producer`, so the Kafka client library is a plug point:

* ``kafka-python`` (default, pure Python, installed with ``edgeinfer[agent]``):
  :class:`KafkaPythonTransport` below.
* ``confluent`` (librdkafka through ``confluent-kafka``, ``pip install
  'edgeinfer[confluent]'``): :mod:`edge_agent.transport_confluent`. It fetches and
  produces from librdkafka's own C threads, so the Python side only decodes and infers.

Both raise :class:`TransportError` for anything the broker or the client reports;
the pipeline treats it like any failed send or commit (drop in-memory work, replay from
the last commit, back off).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from stream.exceptions import BrokerError
from stream.settings import KafkaSettings

logger = logging.getLogger(__name__)

Client = Literal["kafka-python", "confluent"]
CLIENTS: tuple[Client, ...] = ("kafka-python", "confluent")

#: ``on_assigned(partitions)`` / ``on_revoked(partitions)``, partitions of the input topic.
RebalanceCallback = Callable[[set[int]], None]


class TransportError(Exception):
    """The client or the broker failed a poll, send, flush or commit."""


class Record(Protocol):
    """One consumed message (kafka-python's ``ConsumerRecord`` has these attributes)."""

    value: bytes | None
    key: bytes | None
    headers: Any
    offset: int
    timestamp: int


class Consumer(Protocol):
    """A group consumer of one topic with manual commits."""

    def poll(self, timeout_ms: int, max_records: int) -> dict[int, list[Any]]:
        """``{partition: records in offset order}``; rebalance callbacks run inside."""
        ...

    def commit(self, offsets: dict[int, int]) -> None:
        """Commit ``{partition: next offset to read}`` synchronously."""
        ...

    def seek(self, partition: int, offset: int) -> None: ...

    def lag(self, partition: int, position: int | None) -> int | None:
        """High watermark minus ``position`` (the consumer's own when None); None if unknown."""
        ...

    def coordinator_known(self) -> bool:
        """The group's coordinator is known and reachable (readiness)."""
        ...

    def close(self) -> None: ...


class Producer(Protocol):
    """Asynchronous sends, confirmed all at once by :meth:`flush`."""

    def send(self, topic: str, value: bytes | None, key: bytes | None, headers: Any) -> None:
        """Queue one message; raises :class:`TransportError` if it cannot be queued."""
        ...

    def flush(self, timeout_s: float) -> None:
        """Wait until every send since the last flush is acknowledged; raises
        :class:`TransportError` naming the first failure or a timeout."""
        ...

    def close(self, timeout_s: float) -> None: ...


@dataclass(frozen=True)
class ConsumerOptions:
    """The agent's consumer settings, the same for every client library."""

    group_id: str
    client_id: str
    max_poll_records: int
    fetch_max_wait_ms: int
    #: One fetch holds at most about one such message: a device has little memory, and a
    #: backlog must not be pulled in 32 MiB at a time.
    max_message_bytes: int
    max_poll_interval_ms: int

    @property
    def fetch_bytes(self) -> int:
        return self.max_message_bytes + 65536


class Transport(Protocol):
    """Makes the agent's consumer and producer (one client library)."""

    name: str

    def consumer(
        self,
        topic: str,
        options: ConsumerOptions,
        *,
        on_assigned: RebalanceCallback,
        on_revoked: RebalanceCallback,
    ) -> Consumer: ...

    def producer(
        self, *, client_id: str, max_block_ms: int, delivery_timeout_ms: int
    ) -> Producer: ...


def make_transport(client: str, settings: KafkaSettings) -> Transport:
    """The transport for ``client`` (one of :data:`CLIENTS`)."""
    if client == "kafka-python":
        return KafkaPythonTransport(settings)
    if client == "confluent":
        from edge_agent.transport_confluent import ConfluentTransport

        return ConfluentTransport(settings)
    msg = f"unknown Kafka client {client!r}; choose one of {', '.join(CLIENTS)}"
    raise ValueError(msg)


# ---------------------------------------------------------------------- kafka-python


class KafkaPythonTransport:
    """kafka-python ``KafkaConsumer`` / ``KafkaProducer`` (the default)."""

    name = "kafka-python"

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings

    def consumer(
        self,
        topic: str,
        options: ConsumerOptions,
        *,
        on_assigned: RebalanceCallback,
        on_revoked: RebalanceCallback,
    ) -> Consumer:
        from kafka.errors import KafkaError

        from stream.kafka import make_consumer

        o = options
        try:
            consumer = make_consumer(
                self.settings,
                group_id=o.group_id,
                client_id=o.client_id,
                max_poll_records=o.max_poll_records,
                fetch_max_wait_ms=o.fetch_max_wait_ms,
                max_partition_fetch_bytes=o.fetch_bytes,
                fetch_max_bytes=o.fetch_bytes,
                max_poll_interval_ms=o.max_poll_interval_ms,
            )
            consumer.subscribe([topic], listener=_listener(topic, on_assigned, on_revoked))
        except (BrokerError, KafkaError) as exc:
            raise TransportError(str(exc)) from exc
        return _KafkaPythonConsumer(consumer, topic)

    def producer(self, *, client_id: str, max_block_ms: int, delivery_timeout_ms: int) -> Producer:
        from kafka.errors import KafkaError

        from stream.kafka import make_producer

        try:
            producer = make_producer(
                self.settings,
                client_id=client_id,
                max_block_ms=max_block_ms,
                batch_size=256 * 1024,
                delivery_timeout_ms=delivery_timeout_ms,
            )
        except (BrokerError, KafkaError) as exc:
            raise TransportError(str(exc)) from exc
        return _KafkaPythonProducer(producer)


def _listener(topic: str, on_assigned: RebalanceCallback, on_revoked: RebalanceCallback) -> Any:
    from kafka import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        def on_partitions_revoked(self, revoked: Any) -> None:
            on_revoked({tp.partition for tp in revoked if tp.topic == topic})

        def on_partitions_assigned(self, assigned: Any) -> None:
            on_assigned({tp.partition for tp in assigned if tp.topic == topic})

    return Listener()


class _KafkaPythonConsumer:
    def __init__(self, consumer: Any, topic: str) -> None:
        from kafka import TopicPartition
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        self._consumer = consumer
        self._topic = topic
        self._tp = TopicPartition
        self._om = OffsetAndMetadata
        self._error = KafkaError

    def poll(self, timeout_ms: int, max_records: int) -> dict[int, list[Any]]:
        try:
            polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except self._error as exc:
            msg = f"poll: {type(exc).__name__}: {exc}"
            raise TransportError(msg) from exc
        return {tp.partition: records for tp, records in polled.items() if records}

    def commit(self, offsets: dict[int, int]) -> None:
        om, tp = self._om, self._tp
        request = {tp(self._topic, p): om(offset, "", -1) for p, offset in offsets.items()}
        try:
            self._consumer.commit(offsets=request, timeout_ms=10_000)
        except self._error as exc:
            msg = f"commit: {type(exc).__name__}: {exc}"
            raise TransportError(msg) from exc

    def seek(self, partition: int, offset: int) -> None:
        self._consumer.seek(self._tp(self._topic, partition), offset)

    def lag(self, partition: int, position: int | None) -> int | None:
        tp = self._tp(self._topic, partition)
        high = self._consumer.highwater(tp)  # not end_offsets(): wrong on Tansu
        if high is None:
            return None
        if position is None:
            position = self._consumer.position(tp, timeout_ms=100)
            if position is None:
                return None
        return max(int(high) - int(position), 0)

    def coordinator_known(self) -> bool:
        # kafka-python has no public "connected" check; the coordinator is the broker the
        # group heartbeats to.
        return not self._consumer._coordinator.coordinator_unknown()

    def close(self) -> None:
        self._consumer.close(autocommit=False)


class _KafkaPythonProducer:
    def __init__(self, producer: Any) -> None:
        from kafka.errors import KafkaError

        self._producer = producer
        self._error = KafkaError
        self._futures: list[Any] = []

    def send(self, topic: str, value: bytes | None, key: bytes | None, headers: Any) -> None:
        try:
            self._futures.append(self._producer.send(topic, value=value, key=key, headers=headers))
        except self._error as exc:
            msg = f"{type(exc).__name__}: {exc}"
            raise TransportError(msg) from exc

    def flush(self, timeout_s: float) -> None:
        if not self._futures:
            return
        try:
            self._producer.flush(timeout=timeout_s)
        except self._error as exc:
            msg = f"{type(exc).__name__}: {exc}"
            raise TransportError(msg) from exc
        futures, self._futures = self._futures, []
        for f in futures:
            if not f.is_done:
                raise TransportError("send not acknowledged in time")
            if f.exception is not None:
                failed = f.exception
                msg = f"{type(failed).__name__}: {failed}"
                raise TransportError(msg)

    def close(self, timeout_s: float) -> None:
        self._futures.clear()
        self._producer.close(timeout=timeout_s)
