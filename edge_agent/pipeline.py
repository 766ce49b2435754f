"""The agent's pipeline: consume, decode, window, batch, infer, produce, commit.

One thread runs everything (kafka-python heartbeats from its own background thread), so
there is no locking between stages. Delivery rules (docs/agent.md):

* **At-least-once.** Results and dead letters are sent asynchronously; at a *sync point*
  (after each poll's records are handled, on a rebalance and on shutdown) the producer is
  flushed and every send checked, and only then are offsets committed. The committed
  offset of a partition is ``min(next offset to consume, oldest offset still held in an
  open sensor window, oldest offset waiting in the batch)``, so every message below it has
  its result or dead letter acknowledged by the broker.
* **Failures.** A failed send, flush or commit (broker gone, idempotent producer fenced
  after a broker restart, ...) closes the producer, drops the in-memory windows and batch,
  seeks every owned partition back to its last commit and backs off (0.5 s doubling to
  10 s). The producer is created anew, and the messages are processed again: duplicates are
  possible, losses are not.
* **Rebalance.** Before partitions are revoked, pending batches are run, flushed and
  committed, and the windows of the revoked partitions are dropped (their new owner
  rebuilds them from the committed offset).
* **Hot swap.** Between batches, every ``model_poll_s``, the model store is polled; on a
  new model the pending batch is finished with the old one, then the new one serves. Every
  result names the version that computed it.
"""

from __future__ import annotations

import io
import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import MemberState, OffsetAndMetadata

from edge_agent.batching import MicroBatcher
from edge_agent.config import AgentConfig
from edge_agent.inputs import fit_image
from edge_agent.metrics import AgentMetrics
from edge_agent.windows import DeviceWindows
from stream import topics
from stream.codecs import (
    dead_letter_headers,
    decode_image,
    decode_sensor,
    headers_dict,
)
from stream.exceptions import BrokerError, DecodeError
from stream.kafka import make_consumer, make_producer
from stream.preprocessing import ImagePreprocessing, SequencePreprocessing

logger = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0
#: Poll timeout when no batch is waiting (bounds how stale health and swaps can get).
IDLE_POLL_MS = 200
FLUSH_TIMEOUT_S = 15.0
COMMIT_TIMEOUT_MS = 10_000
HOUSEKEEPING_S = 0.5
RESULT_HEADERS = [(topics.H_CONTENT_TYPE, b"application/json")]
_JSON_TYPES = ("", "application/json", "text/json")


class ModelProvider(Protocol):
    """What the pipeline needs from :class:`edge_agent.model_store.ModelStore`."""

    def current(self) -> Any: ...

    def poll(self) -> Any | None: ...


@dataclass(slots=True)
class _Item:
    """One input waiting in the batch: an image or a full sensor window."""

    x: np.ndarray
    device_id: str
    partition: int
    #: The message offset (windows: the first reading's).
    offset: int
    last_offset: int
    window: bool
    #: Device timestamp (epoch ms) if the input had one.
    ts: int | None
    #: Kafka record timestamp (epoch ms): the e2e start when ``ts`` is missing.
    kafka_ts: int
    headers: Any
    consumed_at: float
    key: bytes | None
    value: bytes | None


class _DeliveryFailed(Exception):
    def __init__(self, stage: str, exc: BaseException) -> None:
        super().__init__(f"{stage}: {type(exc).__name__}: {exc}")
        self.stage = stage
        self.exc = exc


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.pipeline._on_revoked(revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.pipeline._on_assigned(assigned)


class Pipeline:
    """Consume one input topic and answer it with the model from ``store``."""

    def __init__(
        self,
        *,
        config: AgentConfig,
        store: ModelProvider,
        metrics: AgentMetrics,
        stop: threading.Event | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.stop_event = stop or threading.Event()
        self.model = store.current()
        manifest = self.model.manifest
        self.topic = config.input_for_task(manifest.task)
        self.group_id = config.group_for(manifest.name)
        self.windows: DeviceWindows | None = None
        self._set_preprocessing(self.model.preprocessing)
        self.batcher: MicroBatcher[_Item] = MicroBatcher(
            max_batch=config.max_batch, max_latency_s=config.max_latency_ms / 1000.0
        )
        self.consumer: KafkaConsumer | None = None
        self.producer: KafkaProducer | None = None
        self._futures: list[Any] = []
        self._next: dict[int, int] = {}
        self._committed: dict[int, int] = {}
        self._advanced = False
        self._ready = False
        self._healthy = True
        self._backoff = BACKOFF_MIN_S
        self._next_housekeeping = 0.0
        self._next_model_poll = time.monotonic() + config.model_poll_s
        self._evicted_seen = {"capacity": 0, "idle": 0}
        self._dl_log_at: dict[str, float] = {}
        self.assigned: frozenset[int] = frozenset()
        # Plain counters for the summary line and tests.
        self.consumed = 0
        self.results = 0
        self.deadlettered = 0
        self.metrics.set_model(manifest)
        self._consumed_metric = metrics.messages_consumed.labels(topic=self.topic)

    # ------------------------------------------------------------------ state

    @property
    def ready(self) -> bool:
        """Connected (group joined, coordinator reachable, producer up) with a model."""
        return self._ready

    def _set_preprocessing(self, prep: Any) -> None:
        self.prep = prep
        if isinstance(prep, SequencePreprocessing):
            if self.windows is None:
                self.windows = DeviceWindows(
                    window=prep.window,
                    stride=prep.stride,
                    channels=prep.channels,
                    max_devices=self.config.max_devices,
                    idle_s=self.config.device_idle_s,
                )
            else:
                self.windows.reconfigure(
                    window=prep.window, stride=prep.stride, channels=prep.channels
                )
        elif isinstance(prep, ImagePreprocessing):
            self.windows = None
        else:  # pragma: no cover - the manifest parser only builds these two
            msg = f"unsupported preprocessing {type(prep).__name__}"
            raise TypeError(msg)

    # -------------------------------------------------------------- lifecycle

    def run(self) -> None:
        """Consume until :attr:`stop_event` is set, then drain and close."""
        try:
            self._connect()
            while not self.stop_event.is_set():
                self.step()
            self.drain()
        finally:
            self.close()

    def _connect(self) -> None:
        settings = self.config.kafka
        while not self.stop_event.is_set():
            try:
                consumer = make_consumer(
                    settings,
                    group_id=self.group_id,
                    client_id=f"{settings.client_id}-{self.config.agent_id}",
                    max_poll_records=self.config.max_poll_records,
                    max_poll_interval_ms=self.config.max_poll_interval_ms,
                )
                consumer.subscribe([self.topic], listener=_Listener(self))
                self.consumer = consumer
                logger.info(
                    'consumer subscribed topic="%s" group="%s" agent_id="%s"',
                    self.topic,
                    self.group_id,
                    self.config.agent_id,
                )
                return
            except (BrokerError, KafkaError) as exc:
                logger.warning(
                    "broker unreachable for the consumer, retrying in %.1f s: %s",
                    self._backoff,
                    exc,
                )
                self._wait_backoff()

    def _ensure_producer(self) -> bool:
        if self.producer is not None:
            return True
        s = self.config.kafka
        try:
            self.producer = make_producer(
                s,
                client_id=f"{s.client_id}-{self.config.agent_id}",
                max_block_ms=5000,
                batch_size=256 * 1024,
                delivery_timeout_ms=s.request_timeout_ms + 10_000,
            )
        except (BrokerError, KafkaError) as exc:
            logger.warning("producer cannot start, retrying in %.1f s: %s", self._backoff, exc)
            self._set_ready(False)
            self._wait_backoff()
            return False
        return True

    def _wait_backoff(self) -> None:
        self.stop_event.wait(self._backoff)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)

    def drain(self) -> None:
        """Finish the pending batch, produce, flush and commit (SIGTERM, rebalance)."""
        if self.consumer is None:
            return
        try:
            if self.producer is not None or self.batcher:
                if not self._ensure_producer():
                    return
            self._run_all()
            self._sync()
            logger.info(
                "drained consumed=%d results=%d deadletters=%d committed=%s",
                self.consumed,
                self.results,
                self.deadlettered,
                dict(sorted(self._committed.items())),
            )
        except _DeliveryFailed as exc:
            logger.error(  # noqa: TRY400 (the cause is in the message)
                "drain could not deliver, nothing more committed (the messages will be "
                "processed again on restart): %s",
                exc,
            )

    def close(self) -> None:
        self._set_ready(False)
        if self.consumer is not None:
            try:
                self.consumer.close(autocommit=False)
            except Exception:  # noqa: BLE001
                logger.exception("closing the consumer failed")
            self.consumer = None
        if self.producer is not None:
            try:
                self.producer.close(timeout=5)
            except Exception:  # noqa: BLE001
                logger.exception("closing the producer failed")
            self.producer = None

    # ------------------------------------------------------------------- loop

    def step(self) -> None:
        """One poll: handle its records, run due batches, sync, housekeeping."""
        if not self._ensure_producer():
            return
        assert self.consumer is not None  # noqa: S101
        try:
            now = time.monotonic()
            left = self.batcher.time_left(now)
            timeout_ms = IDLE_POLL_MS if left is None else int(left * 1000)
            polled = self.consumer.poll(
                timeout_ms=timeout_ms, max_records=self.config.max_poll_records
            )
            if polled:
                self._handle_polled(polled)
            if self.batcher and (not polled or self.batcher.due(time.monotonic())):
                self._run_all()
            if self._advanced or self._futures:
                self._sync()
        except _DeliveryFailed as exc:
            self._recover(exc)
            return
        except KafkaError as exc:
            self._recover(_DeliveryFailed("poll", exc))
            return
        now = time.monotonic()
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + HOUSEKEEPING_S
            self._housekeeping(now)

    def _handle_polled(self, polled: dict[TopicPartition, list[Any]]) -> None:
        wall = time.time()
        total = 0
        for tp, records in polled.items():
            if not records:
                continue
            p = tp.partition
            if p not in self._committed:
                self._committed[p] = records[0].offset  # where this assignment started
            handle = self._handle_sensor if self.windows is not None else self._handle_image
            for r in records:
                handle(r, p, wall)
            self._next[p] = records[-1].offset + 1
            total += len(records)
        if total:
            self._advanced = True
            self.consumed += total
            self._consumed_metric.inc(total)

    # ----------------------------------------------------------------- decode

    def _handle_image(self, r: Any, p: int, wall: float) -> None:
        prep = self.prep
        try:
            frame = decode_image(r.value, r.headers, max_bytes=self.config.max_message_bytes)
            x = fit_image(frame.pixels, frame.content_type, prep)
        except DecodeError as exc:
            self._dead_letter(r, p, exc.reason, exc.message)
            return
        except Exception as exc:  # noqa: BLE001  never stop the partition
            logger.exception("%s[%d] offset=%d: unexpected decode failure", r.topic, p, r.offset)
            self._dead_letter(r, p, "internal_error", f"{type(exc).__name__}: {exc}")
            return
        device = frame.device_id or _key_text(r.key) or "unknown"
        self._add(
            _Item(
                x=x,
                device_id=device,
                partition=p,
                offset=r.offset,
                last_offset=r.offset,
                window=False,
                ts=frame.ts,
                kafka_ts=r.timestamp,
                headers=r.headers,
                consumed_at=wall,
                key=r.key,
                value=r.value,
            )
        )

    def _handle_sensor(self, r: Any, p: int, wall: float) -> None:
        windows = self.windows
        assert windows is not None  # noqa: S101
        try:
            ctype = _content_type(r.headers)
            if ctype not in _JSON_TYPES:
                msg = (
                    f"content-type {ctype!r} on the sensor topic; sensor readings are "
                    "application/json (see docs/wire-format.md)"
                )
                raise DecodeError("unknown_content_type", msg)
            chunk = decode_sensor(
                r.value, max_bytes=self.config.max_message_bytes, channels=windows.channels
            )
            full = windows.add(
                chunk.device_id,
                chunk.ts,
                chunk.samples,
                partition=p,
                offset=r.offset,
                headers=r.headers,
                now=time.monotonic(),
            )
        except DecodeError as exc:
            self._dead_letter(r, p, exc.reason, exc.message)
            return
        except Exception as exc:  # noqa: BLE001  never stop the partition
            logger.exception("%s[%d] offset=%d: unexpected decode failure", r.topic, p, r.offset)
            self._dead_letter(r, p, "internal_error", f"{type(exc).__name__}: {exc}")
            return
        for w in full:
            self._add(
                _Item(
                    x=w.values,
                    device_id=w.device_id,
                    partition=p,
                    offset=w.first_offset,
                    last_offset=w.last_offset,
                    window=True,
                    ts=w.ts,
                    kafka_ts=r.timestamp,
                    headers=w.headers,
                    consumed_at=wall,
                    key=r.key,
                    value=None,
                )
            )

    def _add(self, item: _Item) -> None:
        self.batcher.add(item, time.monotonic())
        if self.batcher.full:
            self._run_batch(self.batcher.take())

    # ------------------------------------------------------------------ infer

    def _run_all(self) -> None:
        while self.batcher:
            self._run_batch(self.batcher.take())

    def _run_batch(self, items: list[_Item]) -> None:
        model = self.model
        started = time.time()
        t0 = time.perf_counter()
        try:
            y = model.runtime.run(self.prep.apply(np.stack([it.x for it in items])))
            if y.shape[0] != len(items):
                msg = f"the model returned {y.shape[0]} rows for a batch of {len(items)}"
                raise RuntimeError(msg)
        except Exception as exc:  # noqa: BLE001  isolate the failing input(s)
            logger.warning("batch of %d failed (%s); retrying one by one", len(items), exc)
            self._run_singly(items, model)
            return
        infer_s = time.perf_counter() - t0
        self._emit(items, y, infer_s, started, model)

    def _run_singly(self, items: list[_Item], model: Any) -> None:
        for it in items:
            started = time.time()
            t0 = time.perf_counter()
            try:
                y = model.runtime.run(self.prep.apply(it.x[None]))
            except Exception as exc:  # noqa: BLE001
                logger.exception(
                    "%s[%d] offset=%d: inference failed", self.topic, it.partition, it.offset
                )
                self._dead_letter_item(it, f"{type(exc).__name__}: {exc}")
                continue
            self._emit([it], y, time.perf_counter() - t0, started, model)

    def _emit(
        self, items: list[_Item], y: np.ndarray, infer_s: float, started: float, model: Any
    ) -> None:
        producer = self.producer
        assert producer is not None  # noqa: S101
        m = model.manifest
        labels = m.labels
        n_labels = len(labels)
        self.metrics.inference_duration.labels(model=m.name, version=m.version).observe(infer_s)
        self.metrics.batch_size.labels(model=m.name).observe(len(items))
        e2e_hist = self.metrics.e2e_latency.labels(model=m.name)
        best = y.argmax(axis=1).tolist()
        rows = y.tolist()
        infer_ms = round(infer_s * 1000.0, 3)
        produced_at = int(time.time() * 1000)
        output = self.config.output_topic
        topic = self.topic
        agent_id = self.config.agent_id
        send = producer.send
        futures = self._futures
        for it, j, row in zip(items, best, rows, strict=True):
            if n_labels == len(row):
                scores = dict(zip(labels, row, strict=True))
                label = labels[j]
            else:
                scores = {str(k): v for k, v in enumerate(row)}
                label = str(j)
            source: dict[str, Any] = {"topic": topic, "partition": it.partition}
            if it.window:
                source["offset"] = it.last_offset
                source["first_offset"] = it.offset
                source["last_offset"] = it.last_offset
            else:
                source["offset"] = it.offset
            e2e_ms = produced_at - (it.ts if it.ts is not None else it.kafka_ts)
            hdrs = headers_dict(it.headers)
            # Same keys, order and JSON as stream.codecs.encode_result(InferenceResult(...))
            # without dataclasses.asdict's deep copies (a third of the agent's CPU time).
            value = _dumps(
                {
                    "device_id": it.device_id,
                    "model": m.name,
                    "version": m.version,
                    "label": label,
                    "score": row[j],
                    "scores": scores,
                    "source": source,
                    "latency_ms": {
                        "queue": round(max(started - it.consumed_at, 0.0) * 1000.0, 3),
                        "infer": infer_ms,
                        "e2e": float(e2e_ms),
                    },
                    "ts": it.ts,
                    "produced_at": produced_at,
                    "agent_id": agent_id,
                    "true_label": hdrs.get(topics.H_LABEL),
                    "headers": hdrs,
                }
            ).encode()
            try:
                futures.append(
                    send(
                        output,
                        value=value,
                        key=it.device_id.encode(),
                        headers=RESULT_HEADERS,
                    )
                )
            except KafkaError as exc:
                raise _DeliveryFailed("produce", exc) from exc
            if e2e_ms >= 0:
                e2e_hist.observe(e2e_ms / 1000.0)
        self.results += len(items)
        self.metrics.results_produced.labels(topic=output, model=m.name, version=m.version).inc(
            len(items)
        )

    # ------------------------------------------------------------ dead letters

    def _dead_letter(self, r: Any, p: int, reason: str, message: str) -> None:
        self._send_dead_letter(r.value, r.key, r.headers, p, r.offset, reason, message)

    def _dead_letter_item(self, it: _Item, message: str) -> None:
        value = it.value
        if it.window:  # no single original message: send the window as .npy
            buf = io.BytesIO()
            np.save(buf, it.x, allow_pickle=False)
            value = buf.getvalue()
        self._send_dead_letter(
            value, it.key, it.headers, it.partition, it.offset, "inference_error", message
        )

    def _send_dead_letter(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: Any,
        p: int,
        offset: int,
        reason: str,
        message: str,
    ) -> None:
        producer = self.producer
        assert producer is not None  # noqa: S101
        now = time.monotonic()
        if now >= self._dl_log_at.get(reason, 0.0):
            self._dl_log_at[reason] = now + 10.0  # at most one line per reason per 10 s
            logger.warning(
                '%s[%d] offset=%d dead-lettered reason="%s": %s (further ones of this '
                "reason are counted in edge_agent_deadletters_total)",
                self.topic,
                p,
                offset,
                reason,
                message,
            )
        hdrs = dead_letter_headers(
            list(headers or []),
            error_type=reason,
            error_message=message,
            topic=self.topic,
            partition=p,
            offset=offset,
            agent_id=self.config.agent_id,
        )
        try:
            self._futures.append(
                producer.send(self.config.deadletter_topic, value=value, key=key, headers=hdrs)
            )
        except KafkaError as exc:
            raise _DeliveryFailed("produce", exc) from exc
        self.deadlettered += 1
        self.metrics.deadletters.labels(reason=reason).inc()

    # ----------------------------------------------------------- sync / commit

    def _sync(self) -> None:
        """Flush, check every send, then commit what is done. Raises _DeliveryFailed."""
        producer, consumer = self.producer, self.consumer
        assert producer is not None and consumer is not None  # noqa: S101
        if self._futures:
            try:
                producer.flush(timeout=FLUSH_TIMEOUT_S)
            except KafkaError as exc:
                raise _DeliveryFailed("produce", exc) from exc
            for f in self._futures:
                if not f.is_done:
                    raise _DeliveryFailed("produce", TimeoutError("send not acknowledged"))
                if f.exception is not None:
                    raise _DeliveryFailed("produce", f.exception)
            self._futures.clear()
        offsets = self._committable()
        if offsets:
            try:
                consumer.commit(offsets=offsets, timeout_ms=COMMIT_TIMEOUT_MS)
            except KafkaError as exc:
                raise _DeliveryFailed("commit", exc) from exc
            for tp, om in offsets.items():
                self._committed[tp.partition] = om.offset
        self._advanced = False
        self._backoff = BACKOFF_MIN_S
        if not self._healthy:
            self._healthy = True
            logger.info("delivery works again: results acknowledged and offsets committed")

    def _committable(self) -> dict[TopicPartition, OffsetAndMetadata]:
        pending: dict[int, int] = {}
        for it in self.batcher:
            if it.offset < pending.get(it.partition, math.inf):
                pending[it.partition] = it.offset
        out: dict[TopicPartition, OffsetAndMetadata] = {}
        for p, offset in self._next.items():
            if self.windows is not None:
                held = self.windows.min_held(p)
                if held is not None and held < offset:
                    offset = held
            waiting = pending.get(p)
            if waiting is not None and waiting < offset:
                offset = waiting
            if offset > self._committed.get(p, -1):
                out[TopicPartition(self.topic, p)] = OffsetAndMetadata(offset, "", -1)
        return out

    def _recover(self, failure: _DeliveryFailed) -> None:
        """Drop in-memory work, replay from the last commit, back off."""
        self.metrics.delivery_errors.labels(
            stage="commit" if failure.stage == "commit" else "produce"
        ).inc()
        self._set_ready(False)
        self._healthy = False
        logger.warning(
            "delivery failed (%s); replaying from the last committed offsets %s after %.1f s",
            failure,
            dict(sorted(self._committed.items())),
            self._backoff,
        )
        self._futures.clear()
        if self.producer is not None:
            try:
                self.producer.close(timeout=0)
            except Exception:  # noqa: BLE001
                logger.debug("closing the failed producer raised", exc_info=True)
            self.producer = None
        self.batcher.take_all()
        if self.windows is not None:
            self.windows.clear()
        self._rewind()
        self._wait_backoff()

    def _rewind(self) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        try:
            owned = consumer.assignment()
        except Exception:  # noqa: BLE001
            owned = set()
        for tp in owned:
            start = self._committed.get(tp.partition)
            if start is None:
                continue
            try:
                consumer.seek(tp, start)
            except Exception as exc:  # noqa: BLE001
                logger.warning("seek %s[%d] to %d failed: %s", tp.topic, tp.partition, start, exc)
        self._next.clear()
        self._advanced = False

    # --------------------------------------------------------------- rebalance

    def _on_revoked(self, revoked: Any) -> None:
        parts = {tp.partition for tp in revoked if tp.topic == self.topic}
        logger.info("partitions revoked topic=%s partitions=%s", self.topic, sorted(parts))
        try:
            if self.producer is not None:
                self._run_all()
                self._sync()
        except _DeliveryFailed as exc:
            logger.warning("could not finish work before the rebalance (replayed later): %s", exc)
            self.batcher.take_all()
            self._futures.clear()
        if self.windows is not None:
            self.windows.drop_partitions(parts)
        for p in parts:
            self._next.pop(p, None)
            self._committed.pop(p, None)
        self.assigned = frozenset(self.assigned - parts)
        self.metrics.forget_partitions(self.topic, sorted(parts))
        self.metrics.partitions_assigned.set(len(self.assigned))

    def _on_assigned(self, assigned: Any) -> None:
        parts = {tp.partition for tp in assigned if tp.topic == self.topic}
        self.assigned = frozenset(parts)
        self.metrics.partitions_assigned.set(len(parts))
        logger.info("partitions assigned topic=%s partitions=%s", self.topic, sorted(parts))

    # ------------------------------------------------------------ housekeeping

    def _housekeeping(self, now: float) -> None:
        self._update_ready()
        self._update_lag()
        if self.windows is not None:
            self.windows.evict_idle(now)
            self.metrics.windows_open.set(len(self.windows))
            for reason, count in self.windows.evicted.items():
                delta = count - self._evicted_seen[reason]
                if delta:
                    self.metrics.windows_evicted.labels(reason=reason).inc(delta)
                    self._evicted_seen[reason] = count
        if now >= self._next_model_poll:
            self._next_model_poll = now + self.config.model_poll_s
            self._poll_model()

    def _update_ready(self) -> None:
        consumer = self.consumer
        ok = consumer is not None and self.producer is not None and self._healthy
        if ok:
            assert consumer is not None  # noqa: S101
            try:
                joined = consumer.group_metadata().state == MemberState.STABLE
                coordinator_known = not consumer._coordinator.coordinator_unknown()
                ok = joined and coordinator_known
            except Exception:  # noqa: BLE001  a private attribute moved: trust the join state
                ok = False
        self._set_ready(ok)

    def _set_ready(self, ok: bool) -> None:
        if ok != self._ready:
            self._ready = ok
            self.metrics.ready.set(1 if ok else 0)
            logger.info("agent %s", "ready" if ok else "not ready")

    def _update_lag(self) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        for p in self.assigned:
            tp = TopicPartition(self.topic, p)
            try:
                high = consumer.highwater(tp)
                if high is None:
                    continue
                position = self._next.get(p)
                if position is None:
                    position = consumer.position(tp, timeout_ms=100)
                if position is None:
                    continue
            except Exception:  # noqa: BLE001, S112  not assigned any more, broker away
                continue
            self.metrics.consumer_lag.labels(topic=self.topic, partition=str(p)).set(
                max(int(high) - int(position), 0)
            )

    def _poll_model(self) -> None:
        try:
            new = self.store.poll()
        except Exception:  # noqa: BLE001  a model source failing must not stop serving
            logger.exception("model store poll failed; the current model keeps serving")
            return
        if new is None:
            return
        old = self.model.manifest
        if type(new.preprocessing) is not type(self.prep):
            logger.error(
                'model version="%s" has task "%s" but this agent serves "%s"; not switching',
                new.manifest.version,
                new.manifest.task,
                old.task,
            )
            return
        self._run_all()  # the old model finishes what it was given
        self.model = new
        self._set_preprocessing(new.preprocessing)
        self.metrics.set_model(new.manifest)
        logger.info(
            'model switched name="%s" from_version="%s" to_version="%s" sha256=%s',
            new.manifest.name,
            old.version,
            new.manifest.version,
            new.manifest.model_sha256[:12],
        )


def _dumps(obj: dict[str, Any]) -> str:
    """JSON as :func:`stream.codecs.encode_result` writes it (compact, NaN refused)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def _key_text(key: bytes | None) -> str | None:
    if not key:
        return None
    return key.decode("utf-8", errors="replace")


def _content_type(headers: Any) -> str:
    for name, value in headers or ():
        if name.lower() == topics.H_CONTENT_TYPE:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            return text.split(";", 1)[0].strip().lower()
    return ""


__all__ = ["ModelProvider", "Pipeline"]
