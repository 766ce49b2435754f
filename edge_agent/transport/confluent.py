"""The agent's transport on confluent-kafka (librdkafka): ``edgeinfer agent --client confluent``.

librdkafka fetches ahead and produces from its own C threads; the Python side takes
records in batches (``Consumer.consume``) and queues sends (``Producer.produce``), so the
per-message cost in the agent's thread is a fraction of kafka-python's. The delivery rules
are the same as with kafka-python (docs/agent.md): a send is reported by its delivery
callback (served by ``poll(0)``, or by ``flush`` when the agent waits) before the offsets
it answers are committed, explicitly (asynchronously in steady state, synchronously at a
sync point).

Memory on a device: the pre-fetch queue is bounded to about two maximal messages
(``queued.max.messages.kbytes``) and the producer queue to 64 MiB.

Why one module of this size: it is one client's adapter (consumer, producer, error
mapping) behind :mod:`edge_agent.transport.base`, as kafka_python.py is for the other.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from edge_agent.transport.base import (
    Consumer,
    ConsumerOptions,
    Producer,
    RebalanceCallback,
    Resolved,
    TransportError,
)
from stream.exceptions import ConfigError
from stream.settings import KafkaSettings

logger = logging.getLogger(__name__)

#: How often librdkafka reports its statistics (the group coordinator's state comes
#: from there: readiness).
STATS_INTERVAL_MS = 200
#: Longest a send waits for room in a full producer queue.
PRODUCER_QUEUE_KBYTES = 64 * 1024
#: How soon librdkafka fetches again once its (small, bounded) pre-fetch queue has room.
FETCH_QUEUE_BACKOFF_MS = 10
#: How long a send to a topic the broker does not list waits for it to appear.
MISSING_TOPIC_WAIT_MS = 3000
#: Consumer errors logged at most once per this many seconds (per error code).
ERROR_LOG_EVERY_S = 10.0


def _confluent() -> Any:
    try:
        import confluent_kafka
    except ImportError as exc:
        msg = (
            "--client confluent needs the confluent-kafka package (librdkafka), which is not "
            f"installed ({exc}); install it with `pip install 'edgeinfer[agent]'` or run "
            "the agent with --client kafka-python (or --client auto, which falls back to it)"
        )
        raise ConfigError(msg) from exc
    return confluent_kafka


def _code(err: Any) -> str:
    """librdkafka's error name (TransportError maps it to the protocol's)."""
    try:
        return str(err.name())
    except Exception:  # noqa: BLE001  not a KafkaError
        return ""


def _error(where: str, exc: BaseException, *, failed: tuple[Any, ...] = ()) -> TransportError:
    """A confluent-kafka exception as a :class:`TransportError` keeping librdkafka's code."""
    err = exc.args[0] if exc.args else None
    return TransportError(f"{where}: {exc}", code=_code(err), failed=failed)


def _config_error(what: str, exc: Exception) -> ConfigError:
    """librdkafka checks its configuration when a client is made (it does not connect
    yet), so a failure there is a setting to fix, not an outage to wait out."""
    err = exc.args[0] if exc.args else exc
    text = err.str() if hasattr(err, "str") else str(err)
    msg = (
        f"librdkafka refused the {what} configuration: {text}; fix the Kafka settings "
        "(TLS/SASL files and values, --max-message-bytes) or run with --client kafka-python"
    )
    return ConfigError(msg)


class _LibrdkafkaLog:
    """librdkafka's log lines into ``logging`` ("librdkafka"), at most one per facility
    (FAIL, SESSTMOUT, ...) every ``ERROR_LOG_EVERY_S`` above DEBUG: a broker that is away
    makes librdkafka report every reconnect attempt, which the client retries anyway."""

    def __init__(self) -> None:
        self._logger = logging.getLogger("librdkafka")
        self._next: dict[str, float] = {}

    def log(self, level: int, fmt: str, *args: Any) -> None:
        fac = str(args[0]) if args else ""
        if level < logging.CRITICAL:
            now = time.monotonic()
            if now < self._next.get(fac, 0.0):
                level = logging.DEBUG
            else:
                self._next[fac] = now + ERROR_LOG_EVERY_S
                level = min(level, logging.WARNING)  # retried by the client
        self._logger.log(level, fmt, *args)


@dataclass(slots=True, eq=False)
class _Record:
    """A consumed message with the attributes of kafka-python's ``ConsumerRecord``."""

    value: bytes | None
    key: bytes | None
    headers: Any
    offset: int
    timestamp: int


class ConfluentTransport:
    """confluent-kafka ``Consumer`` / ``Producer``."""

    name = "confluent"

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.ck = _confluent()

    def consumer(
        self,
        topic: str,
        options: ConsumerOptions,
        *,
        on_assigned: RebalanceCallback,
        on_revoked: RebalanceCallback,
    ) -> Consumer:
        return _ConfluentConsumer(
            self.ck, self.settings, topic, options, on_assigned=on_assigned, on_revoked=on_revoked
        )

    def producer(
        self, *, client_id: str, max_block_ms: int, delivery_timeout_ms: int, max_bytes: int
    ) -> Producer:
        return _ConfluentProducer(
            self.ck,
            self.settings,
            client_id=client_id,
            max_block_ms=max_block_ms,
            delivery_timeout_ms=delivery_timeout_ms,
            max_bytes=max_bytes,
        )


class _ConfluentConsumer:
    def __init__(
        self,
        ck: Any,
        settings: KafkaSettings,
        topic: str,
        o: ConsumerOptions,
        *,
        on_assigned: RebalanceCallback,
        on_revoked: RebalanceCallback,
    ) -> None:
        self._ck = ck
        self._topic = topic
        self._coordinator_state = ""
        self._error_logged_at: dict[int, float] = {}
        fetch = o.fetch_bytes
        conf = settings.librdkafka_consumer_config(
            group_id=o.group_id,
            **{
                "client.id": o.client_id,
                "max.poll.interval.ms": o.max_poll_interval_ms,
                "fetch.wait.max.ms": o.fetch_max_wait_ms,
                # receive.message.max.bytes stays at librdkafka's 100 MB: a broker may answer
                # a fetch with more than fetch.max.bytes (the first batch always comes
                # whole; the embedded broker overshoots), and a response over the limit is
                # dropped and the connection reset, forever.
                "fetch.max.bytes": fetch,
                "message.max.bytes": fetch,
                "max.partition.fetch.bytes": fetch,
                # The pre-fetch queue: about two maximal messages, and a few polls' worth.
                "queued.max.messages.kbytes": max(2 * fetch // 1024, 1024),
                "queued.min.messages": max(2 * o.max_poll_records, 100),
                # With queues this small the thresholds are reached often, and librdkafka
                # then waits fetch.queue.backoff.ms (default 1 s) before fetching again: the
                # agent starved half the time on 6 KB sensor chunks. Check again soon.
                "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
                **({"group.instance.id": o.group_instance_id} if o.group_instance_id else {}),
                "statistics.interval.ms": STATS_INTERVAL_MS,
                "stats_cb": self._on_stats,
                "error_cb": self._on_error,
                "on_commit": self._on_commit,
                "logger": _LibrdkafkaLog(),
            },
        )
        try:
            self._c = ck.Consumer(conf)
        except ck.KafkaException as exc:
            raise _config_error("consumer", exc) from exc

        def assigned(_c: Any, parts: list[Any]) -> None:
            on_assigned({tp.partition for tp in parts if tp.topic == topic})

        def revoked(_c: Any, parts: list[Any]) -> None:
            on_revoked({tp.partition for tp in parts if tp.topic == topic})

        if o.partitions is None:
            self._c.subscribe([topic], on_assign=assigned, on_revoke=revoked, on_lost=revoked)
        else:  # from the committed offsets (OFFSET_STORED), else auto.offset.reset
            self._c.assign([ck.TopicPartition(topic, p) for p in o.partitions])
            on_assigned(set(o.partitions))

    def _on_stats(self, text: str) -> None:
        try:
            self._coordinator_state = str(json.loads(text).get("cgrp", {}).get("state", ""))
        except (ValueError, AttributeError):
            self._coordinator_state = ""

    def _on_error(self, err: Any) -> None:
        self._log_error("client", err)

    def _log_error(self, where: str, err: Any) -> None:
        now = time.monotonic()
        code = err.code()
        if now >= self._error_logged_at.get(code, 0.0):
            self._error_logged_at[code] = now + ERROR_LOG_EVERY_S
            logger.warning("librdkafka %s error (retried by the client): %s", where, err)

    def poll(self, timeout_ms: int, max_records: int) -> dict[int, list[Any]]:
        ck = self._ck
        try:
            # consume(n, timeout) returns only when n messages are there or the timeout
            # has run out, so an input reaching an idle agent would wait up to the whole
            # poll timeout (200 ms). poll() returns with the first message; the rest of
            # what is already fetched follows without waiting (as kafka-python's poll).
            first = self._c.poll(timeout_ms / 1000.0)
            msgs = [] if first is None else [first]
            if first is not None and max_records > 1:
                msgs += self._c.consume(num_messages=max_records - 1, timeout=0)
        except (ck.KafkaException, SystemError) as exc:
            raise _error("poll", exc) from exc
        out: dict[int, list[Any]] = {}
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.fatal():
                    msg = f"poll: {err}"
                    raise TransportError(msg, code=_code(err))
                if err.code() != ck.KafkaError._PARTITION_EOF:
                    self._log_error("fetch", err)
                continue
            part = m.partition()
            rec = _Record(m.value(), m.key(), m.headers(), m.offset(), m.timestamp()[1])
            bucket = out.get(part)
            if bucket is None:
                out[part] = [rec]
            else:
                bucket.append(rec)
        return out

    def commit(self, offsets: dict[int, int], *, asynchronous: bool = False) -> None:
        tp = self._ck.TopicPartition
        request = [tp(self._topic, p, offset) for p, offset in offsets.items()]
        try:
            answered = self._c.commit(offsets=request, asynchronous=asynchronous)
        except self._ck.KafkaException as exc:
            raise _error("commit", exc) from exc
        for part in answered or ():
            if part.error is not None:
                msg = f"commit {self._topic}[{part.partition}]: {part.error}"
                raise TransportError(msg, code=_code(part.error))

    def _on_commit(self, err: Any, parts: Any) -> None:
        """An asynchronous commit's outcome (served by poll): a failure is only logged,
        the next commit supersedes it."""
        if err is not None:
            self._log_error("commit", err)
            return
        for part in parts or ():
            if part.error is not None:
                self._log_error("commit", part.error)

    def seek(self, partition: int, offset: int) -> None:
        self._c.seek(self._ck.TopicPartition(self._topic, partition, offset))

    def position(self, partition: int) -> int | None:
        (pos,) = self._c.position([self._ck.TopicPartition(self._topic, partition)])
        return None if pos.offset < 0 else int(pos.offset)  # < 0: OFFSET_INVALID, unknown

    def lag(self, partition: int, position: int | None) -> int | None:
        tp = self._ck.TopicPartition(self._topic, partition)
        _low, high = self._c.get_watermark_offsets(tp, cached=True)
        if high is None or high < 0:
            return None
        if position is None:
            (pos,) = self._c.position([tp])
            if pos.offset < 0:  # OFFSET_INVALID: nothing consumed yet
                return None
            position = pos.offset
        return max(int(high) - int(position), 0)

    def coordinator_known(self) -> bool:
        return self._coordinator_state == "up"

    def partition_count(self) -> int | None:
        try:
            meta = self._c.list_topics(self._topic, timeout=1.0).topics.get(self._topic)
        except self._ck.KafkaException:
            return None
        if meta is None or meta.error is not None:
            return None
        return len(meta.partitions)

    def close(self) -> None:
        self._c.close()


class _ConfluentProducer:
    def __init__(
        self,
        ck: Any,
        settings: KafkaSettings,
        *,
        client_id: str,
        max_block_ms: int,
        delivery_timeout_ms: int,
        max_bytes: int,
    ) -> None:
        self._ck = ck
        self._max_block_s = max_block_ms / 1000.0
        #: Sends not resolved yet, and those resolved since the last resolved() call.
        self._unresolved = 0
        self._done: list[Resolved] = []
        self._fatal: str | None = None
        conf = settings.librdkafka_producer_config(
            **{
                "client.id": client_id,
                "message.timeout.ms": delivery_timeout_ms,
                "message.max.bytes": max_bytes,
                # A topic the broker does not have fails its sends after this long
                # (UNKNOWN_TOPIC, permanent) instead of waiting out message.timeout.ms.
                "topic.metadata.propagation.max.ms": MISSING_TOPIC_WAIT_MS,
                "queue.buffering.max.kbytes": PRODUCER_QUEUE_KBYTES,
                "error_cb": self._on_error,
                "logger": _LibrdkafkaLog(),
            }
        )
        try:
            self._p = ck.Producer(conf)
        except ck.KafkaException as exc:
            raise _config_error("producer", exc) from exc

    def _on_error(self, err: Any) -> None:
        if err.fatal():
            self._fatal = str(err)
        else:
            logger.debug("librdkafka producer error (retried by the client): %s", err)

    def _on_delivery(self, token: Any) -> Any:
        def delivered(err: Any, _msg: Any) -> None:
            self._unresolved -= 1
            if err is None:
                self._done.append((token, None))
            else:
                failure = TransportError(f"send: {err}", code=_code(err), failed=(token,))
                self._done.append((token, failure))

        return delivered

    def send(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Any, token: Any
    ) -> None:
        if self._fatal is not None:
            msg = f"the producer failed for good: {self._fatal}"
            raise TransportError(msg)
        deadline = time.monotonic() + self._max_block_s
        on_delivery = self._on_delivery(token)
        while True:
            try:
                self._p.produce(topic, value, key, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:  # the queue is full: serve callbacks until there is room
                if time.monotonic() >= deadline:
                    msg = f"producer queue full for {self._max_block_s:.1f} s"
                    raise TransportError(msg) from None
                self._p.poll(0.05)
            except self._ck.KafkaException as exc:
                raise _error("produce", exc, failed=(token,)) from exc
        self._unresolved += 1

    def resolved(self, timeout_s: float) -> list[Resolved]:
        if self._unresolved:
            try:
                # Both serve the delivery callbacks; flush waits for every send (and sends
                # at once, whatever linger.ms says), poll(0) only collects.
                if timeout_s > 0:
                    self._p.flush(timeout_s)
                else:
                    self._p.poll(0)
            # confluent-kafka 2.16 raises SystemError ("returned NULL without setting an
            # exception") from a flush that meets a fatal idempotence error (seen when the
            # broker restarts and hands out the same producer id again).
            except (self._ck.KafkaException, SystemError) as exc:
                raise _error("flush", exc) from exc
        if self._fatal is not None:
            msg = f"the producer failed for good: {self._fatal}"
            raise TransportError(msg)
        done, self._done = self._done, []
        return done

    def close(self, timeout_s: float) -> None:
        if timeout_s > 0:
            self._p.flush(timeout_s)
        else:
            self._p.purge()
            self._p.flush(0)
