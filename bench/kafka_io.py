"""Feeding topics and reading what the contenders produced.

The bench preloads a fresh topic before a contender starts (so the contender, not the
producer, is the bottleneck) or produces at a fixed rate (latency under load). Every
contender writes one result per input; :class:`ResultsReader` collects each result's time
(``produced_at`` in the result, else the record's timestamp) and end-to-end latency.
"""

from __future__ import annotations

import gc
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import TopicPartition

from bench.exceptions import BenchError
from bench.messages import Message
from edge_agent.transport import resolve_client
from stream.kafka import ensure_topics, make_consumer, make_producer, topic_partitions
from stream.settings import KafkaSettings

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


def unique_topic(prefix: str) -> str:
    return f"bench.{prefix}.{uuid.uuid4().hex[:8]}"


def fresh_topics(settings: KafkaSettings, names: Sequence[str], partitions: int = 1) -> None:
    ensure_topics(settings, list(names), partitions=partitions)


def preload(
    settings: KafkaSettings,
    topic: str,
    messages: Sequence[Message],
    *,
    partitions: int = 1,
    progress: Progress | None = None,
) -> float:
    """Produce every message (round-robin over ``partitions``), flush; returns seconds taken."""
    producer = make_producer(
        settings, linger_ms=20, batch_size=512 * 1024, acks=1, enable_idempotence=False
    )
    started = time.perf_counter()
    futures = []
    try:
        for i, m in enumerate(messages):
            futures.append(
                producer.send(
                    topic, value=m.value, key=m.key, headers=m.headers, partition=i % partitions
                )
            )
            if progress is not None and i and i % 5000 == 0:
                progress(f"preloaded {i}/{len(messages)}")
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=10)
    failed = [f.exception for f in futures if f.is_done and f.exception is not None]
    if failed:
        msg = f"preloading {topic!r} failed for {len(failed)} messages: {failed[0]}"
        raise BenchError(msg)
    return time.perf_counter() - started


#: The simulated devices send through one gateway producer with librdkafka's default
#: linger (5 ms, counted in e2e since ``ts`` is stamped before it). With one batch per
#: message (linger 0) the embedded broker, whose storage lists every batch of a partition
#: on each fetch that finds data, used 80% of its core by the end of a 12-s step at 90% of
#: the agent's capacity, and its slow answers set the agent's latency.
DEVICE_LINGER_MS = 5


def produce_paced(
    settings: KafkaSettings,
    topic: str,
    make: Callable[[int, int], Message],
    *,
    rate: float,
    seconds: float,
    partitions: int = 1,
) -> PacedRun:
    """Send ``make(i, ts_ms)`` at ``rate`` per second for ``seconds``.

    ``ts`` is taken when the message is sent, so a result's ``produced_at - ts`` is the
    latency a device sees. Sends are paced on an absolute schedule (no drift); when the
    producer falls behind it sends without sleeping.

    The devices are simulated with librdkafka when confluent-kafka is installed: it sends
    from its own threads, off the GIL, at a few microseconds of CPU per message. The
    kafka-python producer took ~40-55% of the core it shares with the broker at 90% of the
    agent's capacity, which saturated that core and delayed the broker's answers (the
    device side, not the agent, set the latency). kafka-python is the fallback.
    """
    if resolve_client("auto") == "confluent":
        return _paced_confluent(settings, topic, make, rate=rate, seconds=seconds, parts=partitions)
    producer = make_producer(settings, linger_ms=DEVICE_LINGER_MS, acks=1, enable_idempotence=False)
    try:
        run = _paced(
            lambda m, p: producer.send(
                topic, value=m.value, key=m.key, headers=m.headers, partition=p
            ),
            make,
            rate=rate,
            seconds=seconds,
            partitions=partitions,
        )
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)
    return run


@dataclass(frozen=True, slots=True)
class PacedRun:
    """What :func:`produce_paced` sent: how many, at what real rate, and the latest any
    send was against its schedule (a late send is followed by a burst that catches up)."""

    sent: int
    rate: float
    late_max_ms: float


def _paced(
    send: Callable[[Message, int], Any],
    make: Callable[[int, int], Message],
    *,
    rate: float,
    seconds: float,
    partitions: int,
) -> PacedRun:
    interval = 1.0 / rate
    total = max(int(rate * seconds), 1)
    late = 0.0
    # No garbage collection while pacing: by the latency case the bench process holds the
    # observations of every case before it, and a full collection of those pauses this
    # loop, which then sends the frames it owes in one burst (the agent sees a spike that
    # the devices would not cause). The loop makes little cyclic garbage.
    collecting = gc.isenabled()
    gc.disable()
    started = time.perf_counter()
    try:
        for i in range(total):
            due = started + i * interval
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            else:
                late = max(late, -wait)
            send(make(i, int(time.time() * 1000)), i % partitions)
        elapsed = time.perf_counter() - started
    finally:
        if collecting:
            gc.enable()
    return PacedRun(total, total / elapsed if elapsed > 0 else 0.0, round(late * 1000.0, 2))


def _paced_confluent(
    settings: KafkaSettings,
    topic: str,
    make: Callable[[int, int], Message],
    *,
    rate: float,
    seconds: float,
    parts: int,
) -> PacedRun:
    import confluent_kafka

    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "client.id": "bench-devices",
            "acks": "1",
            "enable.idempotence": False,
            "linger.ms": DEVICE_LINGER_MS,
        }
    )

    def send(m: Message, partition: int) -> None:
        headers: list[tuple[str, str | bytes | None]] = list(m.headers)
        producer.produce(
            topic,
            value=m.value,
            key=m.key,
            headers=headers,
            partition=partition,
            on_delivery=on_delivery,
        )
        producer.poll(0)

    run = _paced(send, make, rate=rate, seconds=seconds, partitions=parts)
    left = producer.flush(60)
    if left or errors:
        msg = f"paced production to {topic!r}: {left} unsent, {len(errors)} failed {errors[:1]}"
        raise BenchError(msg)
    return run


@dataclass(slots=True)
class Observation:
    produced_at: float
    #: The input's device timestamp (epoch ms), when the result carries it.
    ts: float | None
    e2e_ms: float | None
    agent_id: str | None
    partition: int


@dataclass
class ResultsReader:
    """Reads a results topic from the beginning without a group; call :meth:`poll`."""

    settings: KafkaSettings
    topic: str
    observations: list[Observation] = field(default_factory=list)
    undecodable: int = 0

    def __post_init__(self) -> None:
        self._consumer = make_consumer(self.settings, group_id=None, auto_offset_reset="earliest")
        parts = [
            TopicPartition(self.topic, p) for p in topic_partitions(self._consumer, self.topic)
        ]
        self._consumer.assign(parts)
        self._consumer.seek_to_beginning(*parts)

    def poll(self, timeout_ms: int = 200) -> int:
        batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=10_000)
        n = 0
        for records in batches.values():
            for rec in records:
                n += 1
                self.observations.append(_observe(rec))
        return n

    @property
    def count(self) -> int:
        return len(self.observations)

    def wait_for(
        self,
        count: int,
        *,
        cap_s: float,
        idle_s: float = 30.0,
        check: Callable[[], None] | None = None,
        progress: Progress | None = None,
        label: str = "",
    ) -> None:
        """Poll until ``count`` results, ``cap_s`` seconds after the first one, or no result
        for ``idle_s`` (a stalled or dead contender: :class:`BenchError`)."""
        first: float | None = None
        last_new = time.monotonic()
        next_report = time.monotonic() + 2.0
        while self.count < count:
            if check is not None:
                check()
            if self.poll(timeout_ms=200):
                last_new = time.monotonic()
                first = first if first is not None else last_new
            now = time.monotonic()
            if first is not None and now - first >= cap_s:
                logger.info(
                    "%s stopped at the time cap results=%d cap_s=%.0f", label, self.count, cap_s
                )
                return
            if now - last_new > idle_s:
                msg = f"{label}: no result for {idle_s:.0f} s ({self.count}/{count} in)"
                raise BenchError(msg)
            if progress is not None and now >= next_report:
                next_report = now + 2.0
                progress(f"{label}: {self.count}/{count} results")

    def times(self) -> list[float]:
        return [o.produced_at for o in self.observations]

    def e2e(self, since_ms: float | None = None) -> list[float]:
        return [
            o.e2e_ms
            for o in self.observations
            if o.e2e_ms is not None and (since_ms is None or o.produced_at >= since_ms)
        ]

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> ResultsReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _observe(rec: Any) -> Observation:
    produced_at = float(rec.timestamp)
    e2e: float | None = None
    ts: float | None = None
    agent: str | None = None
    try:
        obj = json.loads(rec.value)
    except (TypeError, ValueError):
        obj = None
    if isinstance(obj, dict):
        if isinstance(obj.get("produced_at"), int | float):
            produced_at = float(obj["produced_at"])
        if isinstance(obj.get("ts"), int | float):
            ts = float(obj["ts"])
        lat = obj.get("latency_ms")
        if isinstance(lat, dict) and isinstance(lat.get("e2e"), int | float):
            e2e = float(lat["e2e"])
        elif ts is not None:
            e2e = produced_at - ts
        agent = obj.get("agent_id") if isinstance(obj.get("agent_id"), str) else None
    return Observation(
        produced_at=produced_at, ts=ts, e2e_ms=e2e, agent_id=agent, partition=rec.partition
    )


def consumer_floor(
    settings: KafkaSettings, *, fetch_max_wait_ms: int, rate: float = 4.0, seconds: float = 5.0
) -> list[float]:
    """Milliseconds from send to a plain kafka-python consumer's poll, at a low rate.

    No agent involved: this is the floor the broker and the clients put under every
    end-to-end latency (sent by :func:`produce_paced`, so the devices' linger is in it).
    On Tansu a pending fetch is not answered when data arrives, so ``fetch_max_wait_ms``
    (kafka-python's default: 500) shows up here.
    """
    import threading

    topic = unique_topic(f"floor-{fetch_max_wait_ms}")
    fresh_topics(settings, [topic])
    consumer = make_consumer(settings, topic, group_id=None, fetch_max_wait_ms=fetch_max_wait_ms)
    consumer.poll(timeout_ms=500)
    lags: list[float] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=100).values():
                now = time.time() * 1000.0
                lags.extend(now - float(r.value) for r in records)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        produce_paced(
            settings,
            topic,
            lambda i, ts: Message(None, str(ts).encode(), []),
            rate=rate,
            seconds=seconds,
        )
        deadline = time.monotonic() + fetch_max_wait_ms / 1000.0 + 2.0
        while time.monotonic() < deadline and len(lags) < int(rate * seconds):
            time.sleep(0.05)
    finally:
        stop.set()
        reader.join(timeout=5)
        consumer.close()
    return lags
