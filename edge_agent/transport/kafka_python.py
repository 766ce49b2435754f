"""The agent's transport on kafka-python (pure Python; the fallback when confluent-kafka
is not installed).

Sends are futures; :meth:`_KafkaPythonProducer.resolved` reports the done ones (after a
``flush`` when the agent waits). kafka-python
reports a missing topic only as a metadata timeout; when the metadata *was* refreshed
within that wait and does not list the topic, the send is refused as
``UNKNOWN_TOPIC_OR_PARTITION`` (permanent), and the topic is remembered as missing for
:data:`MISSING_TOPIC_TTL_S` so every later send fails at once instead of waiting again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from edge_agent.transport.base import (
    Consumer,
    ConsumerOptions,
    Producer,
    RebalanceCallback,
    Resolved,
    TransportError,
)
from stream.exceptions import BrokerError
from stream.settings import KafkaSettings

logger = logging.getLogger(__name__)

#: How long a topic the broker said it does not have is refused without asking again.
MISSING_TOPIC_TTL_S = 30.0
#: A failing asynchronous commit is logged at most once per this many seconds.
COMMIT_ERROR_LOG_EVERY_S = 10.0


def _error(where: str, exc: BaseException, *, failed: tuple[Any, ...] = ()) -> TransportError:
    """A kafka-python error as a :class:`TransportError` keeping its protocol code."""
    code = getattr(exc, "message", None)
    if not isinstance(code, str):
        code = ""
    msg = f"{where}: {type(exc).__name__}: {exc}"
    return TransportError(msg, code=code, failed=failed)


class KafkaPythonTransport:
    """kafka-python ``KafkaConsumer`` / ``KafkaProducer``."""

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
                group_instance_id=o.group_instance_id,
            )
            if o.partitions is None:
                consumer.subscribe([topic], listener=_listener(topic, on_assigned, on_revoked))
            else:
                from kafka import TopicPartition

                consumer.assign([TopicPartition(topic, p) for p in o.partitions])
        except (BrokerError, KafkaError) as exc:
            raise _error("consumer", exc) from exc
        if o.partitions is not None:
            on_assigned(set(o.partitions))
        return _KafkaPythonConsumer(consumer, topic)

    def producer(
        self, *, client_id: str, max_block_ms: int, delivery_timeout_ms: int, max_bytes: int
    ) -> Producer:
        from kafka.errors import KafkaError

        from stream.kafka import make_producer

        try:
            producer = make_producer(
                self.settings,
                client_id=client_id,
                max_block_ms=max_block_ms,
                batch_size=256 * 1024,
                delivery_timeout_ms=delivery_timeout_ms,
                max_request_size=max_bytes,
            )
        except (BrokerError, KafkaError) as exc:
            raise _error("producer", exc) from exc
        return _KafkaPythonProducer(producer, max_block_ms=max_block_ms)


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
        self._commit_error_logged_at = 0.0

    def poll(self, timeout_ms: int, max_records: int) -> dict[int, list[Any]]:
        try:
            polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except self._error as exc:
            raise _error("poll", exc) from exc
        return {tp.partition: records for tp, records in polled.items() if records}

    def commit(self, offsets: dict[int, int], *, asynchronous: bool = False) -> None:
        om, tp = self._om, self._tp
        request = {tp(self._topic, p): om(offset, "", -1) for p, offset in offsets.items()}
        try:
            if asynchronous:
                self._consumer.commit_async(offsets=request, callback=self._on_commit)
            else:
                self._consumer.commit(offsets=request, timeout_ms=10_000)
        except self._error as exc:
            raise _error("commit", exc) from exc

    def _on_commit(self, _offsets: Any, result: Any) -> None:
        """An asynchronous commit's outcome (served by poll): a failure is only logged
        (at most every ``COMMIT_ERROR_LOG_EVERY_S``), the next commit supersedes it."""
        if isinstance(result, BaseException):
            now = time.monotonic()
            if now >= self._commit_error_logged_at:
                self._commit_error_logged_at = now + COMMIT_ERROR_LOG_EVERY_S
                logger.warning("asynchronous commit failed (the next supersedes it): %s", result)

    def seek(self, partition: int, offset: int) -> None:
        self._consumer.seek(self._tp(self._topic, partition), offset)

    def position(self, partition: int) -> int | None:
        pos = self._consumer.position(self._tp(self._topic, partition), timeout_ms=100)
        return None if pos is None else int(pos)

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

    def partition_count(self) -> int | None:
        parts = self._consumer.partitions_for_topic(self._topic)
        return None if parts is None else len(parts)

    def close(self) -> None:
        self._consumer.close(autocommit=False)


class _KafkaPythonProducer:
    def __init__(self, producer: Any, *, max_block_ms: int) -> None:
        from kafka.errors import KafkaError, KafkaTimeoutError

        self._producer = producer
        self._error = KafkaError
        self._timeout = KafkaTimeoutError
        self._max_block_ms = max_block_ms
        self._futures: list[tuple[Any, Any]] = []
        #: topic -> monotonic time until which it is known not to exist
        self._missing: dict[str, float] = {}

    def send(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Any, token: Any
    ) -> None:
        until = self._missing.get(topic)
        if until is not None and time.monotonic() < until:
            msg = f"send: topic {topic!r} does not exist on the broker (auto-create is off?)"
            raise TransportError(msg, code="UNKNOWN_TOPIC_OR_PARTITION", failed=(token,))
        if key is None and value is None:
            # kafka-python refuses a record with neither (a dead letter of a key-less
            # tombstone): send an empty value instead (docs/wire-format.md, Dead letters).
            value = b""
        started_ms = time.time() * 1000.0
        try:
            future = self._producer.send(topic, value=value, key=key, headers=headers)
        except self._timeout as exc:
            if self._topic_missing(topic, started_ms):
                self._missing[topic] = time.monotonic() + MISSING_TOPIC_TTL_S
                msg = f"send: topic {topic!r} does not exist on the broker (auto-create is off?)"
                raise TransportError(
                    msg, code="UNKNOWN_TOPIC_OR_PARTITION", failed=(token,)
                ) from exc
            raise _error("send", exc, failed=(token,)) from exc
        except self._error as exc:
            raise _error("send", exc, failed=(token,)) from exc
        except (ValueError, TypeError, UnicodeError) as exc:  # the client refuses the record
            msg = f"send: the client refused the record: {type(exc).__name__}: {exc}"
            raise TransportError(msg, code="INVALID_RECORD", failed=(token,)) from exc
        self._futures.append((token, future))

    def _topic_missing(self, topic: str, started_ms: float) -> bool:
        """The metadata was refreshed during the wait, and the broker has no such topic."""
        md = getattr(self._producer, "_metadata", None)
        refreshed = getattr(md, "_last_successful_refresh_ms", 0)
        return md is not None and refreshed >= started_ms and topic not in md.topics()

    def resolved(self, timeout_s: float) -> list[Resolved]:
        if timeout_s > 0 and self._futures:
            try:
                self._producer.flush(timeout=timeout_s)
            except self._timeout:
                pass  # what is still outstanding stays so; the caller decides
            except self._error as exc:
                raise _error("flush", exc) from exc
        done: list[Resolved] = []
        left: list[tuple[Any, Any]] = []
        for token, f in self._futures:
            if not f.is_done:
                left.append((token, f))
            elif f.exception is None:
                done.append((token, None))
            else:
                done.append((token, _error("send", f.exception, failed=(token,))))
        self._futures = left
        return done

    def close(self, timeout_s: float) -> None:
        self._futures.clear()
        self._producer.close(timeout=timeout_s)
