"""The agent's pipeline: consume, decode, window, batch, infer, produce, commit.

(Over 400 lines on purpose: this is the loop and the state it alone changes, from one
thread: poll, sync/commit, recovery, readiness, hot swap and rollback. Each stage it calls
has its own module: inputs, windows, batching, answers, deadletters, offsets, membership,
delivery, transport.)

One thread runs everything (kafka-python heartbeats from its own background thread), so
there is no locking between stages. Delivery rules (docs/agent.md):

* **At-least-once.** Results and dead letters are sent asynchronously. After each poll's
  records are handled the loop notes the offsets it could commit once its sends so far are
  acknowledged (``min(next offset to consume, oldest offset still held in an open sensor
  window, oldest offset waiting in the batch)``), and commits, asynchronously, the newest
  noted offsets whose sends the broker has acknowledged (:class:`Delivery` epochs), so
  every message below a committed offset has its result or dead letter on the broker. The
  loop never waits for the broker in steady state; it waits (flush, then a synchronous
  commit: a *sync point*) on shutdown, before a rebalance takes partitions (when the
  client calls back on this thread: librdkafka), when a send was refused for good, and
  when acknowledgements lag more than ``MAX_UNSETTLED_S``.
* **Per-record isolation.** Anything that goes wrong with one input or window (decode,
  preprocessing, inference, a non-finite or mis-shaped output, result encoding, a send
  the broker refuses for good) ends as a dead letter with a reason
  (:mod:`edge_agent.deadletters`), never as a crash; offsets: :mod:`edge_agent.offsets`.
* **Failures.** A transient failure of a send, flush or commit (broker gone, idempotent
  producer fenced after a broker restart, ...) drops the producer, the in-memory windows
  and the batch, seeks every owned partition back to its last commit and backs off (0.5 s
  doubling to 10 s). The messages are processed again: duplicates are possible, losses
  are not.
* **Model health.** A serving model whose outputs are mostly unusable is rolled back to
  the previous verified version (:class:`edge_agent.outputs.OutputGate`).
* **Rebalance.** The callbacks note the change; one that comes on the loop's thread
  (librdkafka's, inside the poll) first makes a sync point, so the new owner answers
  nothing twice (kafka-python's come on its network thread: about one poll's worth may be
  answered again). After the poll, the batch items and windows of revoked partitions are
  dropped; their new owner reads them again from the committed offset.
* **Hot swap.** Between batches, every ``model_poll_s``, the model store is polled; on a
  new model the pending batch is finished with the old one, then the new one serves. Every
  result names the version that computed it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from functools import partial
from typing import Any, Protocol

import numpy as np

from edge_agent.answers import Answers, input_table
from edge_agent.batching import MicroBatcher, Pending
from edge_agent.config import AgentConfig
from edge_agent.deadletters import DeadLetters, Reason
from edge_agent.delivery import Delivery, DeliveryFailed, Refused
from edge_agent.inputs import image_input, window_item
from edge_agent.membership import Membership
from edge_agent.metrics import AgentMetrics
from edge_agent.monitoring import monitoring_for
from edge_agent.offsets import Offsets
from edge_agent.promotion import Decision, Gates
from edge_agent.shadow import Shadow
from edge_agent.transport import (
    Consumer,
    ConsumerOptions,
    Transport,
    TransportError,
    make_transport,
)
from edge_agent.windows import DeviceWindows
from stream.codecs import decode_sensor_record
from stream.exceptions import DecodeError
from stream.preprocessing import ImagePreprocessing, SequencePreprocessing

logger = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0
#: Poll timeout when no batch is waiting (bounds how stale health and swaps can get).
IDLE_POLL_MS = 200
HOUSEKEEPING_S = 0.5
#: Poll timeout until the agent is ready for the first time: readiness is checked after
#: every poll until then, so /readyz turns 200 as soon as the coordinator is known.
STARTUP_POLL_MS = 20
#: Rounds of answering refused sends another way at one sync point: a result becomes a
#: dead letter, a dead letter one without its value, that one is dropped.
MAX_REFUSED_ROUNDS = 3
#: Longest the loop lets noted offsets wait for their acknowledgements before it waits for
#: them (a sync point): bounds what is answered twice after a crash or a rebalance.
MAX_UNSETTLED_S = 1.0
#: Poll timeout while offsets wait for acknowledgements (they are committed soon when idle).
SETTLE_POLL_MS = 10


class ModelProvider(Protocol):
    """What the pipeline needs from :class:`edge_agent.model_store.ModelStore`."""

    def current(self) -> Any: ...

    def poll(self) -> Any | None: ...

    def rollback(self) -> Any: ...

    def promote(self, model: Any, decision: Decision) -> Any | None: ...

    def reject(self, model: Any, decision: Decision) -> None: ...


class Pipeline:
    """Consume one input topic and answer it with the model from ``store``."""

    def __init__(
        self,
        *,
        config: AgentConfig,
        store: ModelProvider,
        metrics: AgentMetrics,
        stop: threading.Event | None = None,
        transport: Transport | None = None,
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
        self.batcher: MicroBatcher[Pending] = MicroBatcher(
            max_batch=config.max_batch, max_latency_s=config.max_latency_ms / 1000.0
        )
        self.transport = transport or make_transport(config.client, config.kafka)
        self.consumer: Consumer | None = None
        self.delivery = Delivery(
            transport=self.transport,
            client_id=f"{config.kafka.client_id}-{config.agent_id}",
            request_timeout_ms=config.kafka.request_timeout_ms,
            max_bytes=config.max_output_bytes,
        )
        self.offsets = Offsets()
        #: Offsets noted but not committed yet: (delivery epoch, noted at, offsets).
        self._unsettled: deque[tuple[int, float, dict[int, int]]] = deque()
        #: The loop's thread (a rebalance callback on it may sync: _on_revoked).
        self._loop_thread: int | None = None
        self._closing = False
        self.deadletters = DeadLetters(
            delivery=self.delivery,
            metrics=metrics,
            source_topic=self.topic,
            topic=config.deadletter_topic,
            agent_id=config.agent_id,
        )
        self.answers = Answers(
            config=config,
            metrics=metrics,
            delivery=self.delivery,
            deadletters=self.deadletters,
            topic=self.topic,
        )
        self.monitoring = monitoring_for(
            config, delivery=self.delivery, metrics=metrics, source_topic=self.topic
        )
        self.answers.monitoring = self.monitoring
        #: The candidate version running in shadow, if any (edge_agent/shadow.py).
        self.shadow: Shadow | None = None
        self.gates = Gates(
            min_inputs=config.shadow_min_inputs,
            agreement=config.shadow_agreement,
            accuracy_margin=config.shadow_accuracy_margin,
            latency_factor=config.shadow_latency_factor,
            max_errors=config.shadow_max_errors,
        )
        self.membership = Membership(
            topic=self.topic,
            metrics=metrics,
            unassigned_limit_s=config.unassigned_limit_s,
            now=time.monotonic(),
        )
        self._ready = False
        self._was_ready = False
        self._healthy = True
        self._backoff = BACKOFF_MIN_S
        self._next_housekeeping = 0.0
        self._next_model_poll = time.monotonic() + config.model_poll_s
        self._evicted_seen = {"capacity": 0, "idle": 0}
        #: ``time.monotonic()`` when the loop last started a step (liveness: /healthz).
        self.last_step_at = time.monotonic()
        # Plain counters for the summary line and tests.
        self.consumed = 0
        self._consumed_metric = metrics.messages_consumed.labels(topic=self.topic)
        metrics.set_model(manifest)

    # ------------------------------------------------------------------ state

    @property
    def assigned(self) -> frozenset[int]:
        """Partitions of the input topic this agent owns now."""
        return self.membership.assigned

    @property
    def revocations(self) -> int:
        """Rebalances that took partitions from this agent."""
        return self.membership.revocations

    @property
    def results(self) -> int:
        return self.answers.count

    @property
    def deadlettered(self) -> int:
        return self.deadletters.count

    @property
    def ready(self) -> bool:
        """Connected (group joined, coordinator reachable, producer up) with a model."""
        return self._ready

    def _set_preprocessing(self, prep: Any) -> None:
        self.prep = prep
        #: For integer image models: uint8 pixel -> quantized input (see
        #: ImagePreprocessing.quantization_table), built once per model.
        self._table: np.ndarray | None = input_table(self.model, prep)
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
        c = self.config
        options = ConsumerOptions(
            group_id=self.group_id,
            client_id=f"{c.kafka.client_id}-{c.agent_id}",
            max_poll_records=c.max_poll_records,
            fetch_max_wait_ms=c.fetch_max_wait_ms,
            max_message_bytes=c.max_message_bytes,
            max_poll_interval_ms=c.max_poll_interval_ms,
            group_instance_id=c.group_instance_id,
            partitions=c.partitions,
        )
        while not self.stop_event.is_set():
            try:
                consumer = self.transport.consumer(
                    self.topic,
                    options,
                    on_assigned=self.membership.on_assigned,
                    on_revoked=self._on_revoked,
                )
            except TransportError as exc:
                logger.warning(
                    "broker unreachable for the consumer, retrying in %.1f s: %s",
                    self._backoff,
                    exc,
                )
                self._wait_backoff()
                continue
            self.consumer = consumer
            logger.info(
                'consumer subscribed topic="%s" group="%s" agent_id="%s" client="%s"',
                self.topic,
                self.group_id,
                self.config.agent_id,
                self.transport.name,
            )
            return

    def _wait_backoff(self) -> None:
        self.stop_event.wait(self._backoff)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)

    def drain(self) -> None:
        """Finish the pending batch, produce, flush and commit (SIGTERM)."""
        if self.consumer is None:
            return
        try:
            if self.batcher and not self.delivery.ensure():
                raise DeliveryFailed("produce", RuntimeError("no producer"))
            self._run_all()
            self._sync()
            logger.info(
                "drained consumed=%d results=%d deadletters=%d committed=%s",
                self.consumed,
                self.results,
                self.deadlettered,
                dict(sorted(self.offsets.committed.items())),
            )
        except (DeliveryFailed, TransportError) as exc:
            logger.error(  # noqa: TRY400 (the cause is in the message)
                "drain could not deliver; nothing more committed (the messages are "
                "processed again on restart): %s",
                exc,
            )
            self.delivery.reset()

    def close(self) -> None:
        self._closing = True
        self._set_ready(False)
        if self.shadow is not None:
            self.shadow.close()
            self._set_shadow(None)
        if self.consumer is not None:
            try:
                self.consumer.close()
            except Exception:  # noqa: BLE001
                logger.exception("closing the consumer failed")
            self.consumer = None
        self.delivery.close()

    # ------------------------------------------------------------------- loop

    def step(self) -> None:
        """One poll: handle its records, run due batches, commit what is acknowledged,
        housekeeping."""
        self.last_step_at = time.monotonic()
        self._loop_thread = threading.get_ident()
        if not self.delivery.ensure():
            self._set_ready(False)
            self._wait_backoff()
            return
        consumer = self.consumer
        assert consumer is not None  # noqa: S101
        try:
            left = self.batcher.time_left(time.monotonic())
            timeout_ms = IDLE_POLL_MS if left is None else int(left * 1000)
            if not self._was_ready:
                timeout_ms = min(timeout_ms, STARTUP_POLL_MS)
            elif self._unsettled:
                timeout_ms = min(timeout_ms, SETTLE_POLL_MS)
            shadow = self.shadow
            if shadow is not None:  # waiting for input is the candidate's spare time
                shadow.spare.set()
            try:
                polled = consumer.poll(timeout_ms, self.config.max_poll_records)
            finally:
                if shadow is not None:
                    shadow.spare.clear()
            if self.membership.changed:
                self.membership.apply(consumer, self.offsets.committed, self._drop_partitions)
            if polled:
                self._handle_polled(polled)
            if self.batcher and (not polled or self.batcher.due(time.monotonic())):
                self._run_all()
            self._settle()
        except DeliveryFailed as exc:
            self._recover(exc)
            return
        except TransportError as exc:
            self._recover(DeliveryFailed("poll", exc))
            return
        now = time.monotonic()
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + HOUSEKEEPING_S
            try:
                self._housekeeping(now)
            except DeliveryFailed as exc:  # finishing a batch before a model swap
                self._recover(exc)
        elif not self._was_ready:
            self._update_ready()

    def _handle_polled(self, polled: dict[int, list[Any]]) -> None:
        wall = time.time()
        total = 0
        handle = self._handle_sensor if self.windows is not None else self._handle_image
        for p, records in polled.items():
            if not records:
                continue
            for r in records:
                handle(r, p, wall)
            self.offsets.handled(p, records[0].offset, records[-1].offset)
            total += len(records)
        if total:
            self.consumed += total
            self._consumed_metric.inc(total)

    def _handle_image(self, r: Any, p: int, wall: float) -> None:
        try:
            item = image_input(
                r, p, self.prep, max_bytes=self.config.max_message_bytes, consumed_at=wall
            )
        except DecodeError as exc:
            self._dead_letter(r.value, r.key, r.headers, p, r.offset, exc.reason, exc.message)
            return
        except Exception as exc:  # noqa: BLE001  a decoder bug must not stop the partition
            self._internal_error(r, p, exc)
            return
        self._add(item)

    def _handle_sensor(self, r: Any, p: int, wall: float) -> None:
        windows = self.windows
        assert windows is not None  # noqa: S101
        try:
            chunk = decode_sensor_record(
                r.value,
                r.headers,
                channels=windows.channels,
                max_bytes=self.config.max_message_bytes,
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
            self._dead_letter(r.value, r.key, r.headers, p, r.offset, exc.reason, exc.message)
            return
        except Exception as exc:  # noqa: BLE001  a decoder bug must not stop the partition
            self._internal_error(r, p, exc)
            return
        for w in full:
            self._add(window_item(w, r, wall))

    def _internal_error(self, r: Any, p: int, exc: Exception) -> None:
        logger.exception("%s[%d] offset=%d: unexpected failure decoding", self.topic, p, r.offset)
        message = f"{type(exc).__name__}: {exc}"
        self._dead_letter(r.value, r.key, r.headers, p, r.offset, "internal_error", message)

    def _add(self, item: Pending) -> None:
        self.batcher.add(item, time.monotonic())
        if self.batcher.full:
            self._run_batch(self.batcher.take())

    # ------------------------------------------------------------------ infer

    def _run_all(self) -> None:
        while self.batcher:
            self._run_batch(self.batcher.take())

    def _run_batch(self, items: list[Pending]) -> None:
        self.answers.run(items, self.model, self.prep, self._table)
        if self.answers.gate.tripped():
            self._roll_back_bad_model()

    def _dead_letter(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: Any,
        p: int,
        offset: int,
        reason: Reason,
        message: str,
    ) -> None:
        self.deadletters.send(value, key, headers, p, offset, reason, message)

    # ----------------------------------------------------------- sync / commit

    def _committable(self) -> dict[int, int]:
        windows = self.windows
        return self.offsets.committable(
            windows.min_held if windows is not None else _nothing_held,
            ((it.partition, it.offset) for it in self.batcher),
        )

    def _settle(self) -> None:
        """Note what may be committed once acknowledged; commit, asynchronously, what the
        broker has acknowledged; never wait, except in the rare cases of a sync point.
        Raises DeliveryFailed."""
        delivery = self.delivery
        now = time.monotonic()
        if self.offsets.advanced or delivery.unmarked:
            self.offsets.advanced = False
            offsets = self._committable()
            epoch = delivery.mark()
            if offsets:
                self._unsettled.append((epoch, now, offsets))
        refused, settled = delivery.settle(wait=False)
        if refused:  # answered another way, then everything is waited for
            self._sync(refused)
            return
        done: dict[int, int] = {}
        while self._unsettled and self._unsettled[0][0] <= settled:
            done.update(self._unsettled.popleft()[2])
        if done:
            self._commit(done, asynchronous=True)
            self._delivered()
        if self._unsettled and now - self._unsettled[0][1] > MAX_UNSETTLED_S:
            self._sync()

    def _commit(self, offsets: dict[int, int], *, asynchronous: bool) -> None:
        """Commit what is ahead of the last commit (revoked partitions were taken out of the
        noted offsets already: _drop_partitions). Raises DeliveryFailed."""
        committed = self.offsets.committed
        offsets = {p: o for p, o in offsets.items() if o > committed.get(p, -1)}
        if not offsets:
            return
        consumer = self.consumer
        assert consumer is not None  # noqa: S101
        try:
            consumer.commit(offsets, asynchronous=asynchronous)
        except TransportError as exc:
            raise DeliveryFailed("commit", exc) from exc
        self.offsets.mark_committed(offsets)

    def _delivered(self) -> None:
        """Sends acknowledged and offsets committed: the backoff and health reset."""
        self._backoff = BACKOFF_MIN_S
        if not self._healthy:
            self._healthy = True
            logger.info("delivery works again: results acknowledged and offsets committed")

    def _sync(self, refused: list[Refused] | None = None) -> None:
        """A sync point: wait for every send, then commit what is done, synchronously.
        Raises DeliveryFailed."""
        if refused:
            self.answers.answer_refused(refused)
        for _ in range(MAX_REFUSED_ROUNDS):
            refused = self.delivery.sync()
            if not refused:
                break
            self.answers.answer_refused(refused)
        else:
            for _token, error in self.delivery.sync():
                logger.error(
                    "a send was refused for good after %d rounds: %s", MAX_REFUSED_ROUNDS, error
                )
        self.offsets.advanced = False
        self.delivery.mark()
        self._unsettled.clear()
        self._commit(self._committable(), asynchronous=False)
        self._delivered()

    def _on_revoked(self, parts: set[int]) -> None:
        """Partitions are taken away: note it (applied after the poll), and when the client
        calls back on the loop's thread (librdkafka does, inside poll) commit everything
        answered first, so the new owner answers nothing twice."""
        self.membership.on_revoked(parts)
        if (
            self._closing
            or self.consumer is None
            or threading.get_ident() != self._loop_thread
            or not (self._unsettled or self.delivery.pending or self.offsets.advanced)
        ):
            return
        try:
            self._sync()
        except Exception as exc:  # noqa: BLE001  the new owner answers them again: duplicates only
            logger.warning("could not commit before the rebalance: %s", exc)

    def _recover(self, failure: DeliveryFailed) -> None:
        """Drop in-memory work, replay from the last commit, back off."""
        stage = "commit" if failure.stage == "commit" else "produce"
        self.metrics.delivery_errors.labels(stage=stage).inc()
        self._set_ready(False)
        self._healthy = False
        logger.warning(
            "delivery failed (%s); replaying from the last committed offsets %s after %.1f s",
            failure,
            dict(sorted(self.offsets.committed.items())),
            self._backoff,
        )
        self.delivery.reset()
        self._unsettled.clear()
        self.batcher.take_all()
        if self.windows is not None:
            self.windows.clear()
        self._rewind()
        self._wait_backoff()

    def _rewind(self) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        for p, start in self.offsets.rewind_targets(self.assigned).items():
            try:
                consumer.seek(p, start)
            except Exception as exc:  # noqa: BLE001  not assigned any more: nothing to replay
                logger.warning("seek %s[%d] to %d failed: %s", self.topic, p, start, exc)

    # --------------------------------------------------------------- rebalance

    def _drop_partitions(self, parts: set[int]) -> None:
        """Forget a revoked partition's work in memory (its new owner replays it)."""
        self.batcher.drop(partial(_on_partitions, parts))
        if self.windows is not None:
            self.windows.drop_partitions(parts)
        self.offsets.forget(parts)
        for _epoch, _at, offsets in self._unsettled:
            for p in parts:
                offsets.pop(p, None)
        self.metrics.forget_partitions(self.topic, sorted(parts))

    # ------------------------------------------------------------ housekeeping

    def _housekeeping(self, now: float) -> None:
        self.membership.refresh(self.consumer, now)
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
        if self.monitoring is not None:
            self.monitoring.publish()
        if self.shadow is not None and self.shadow.decision is not None:
            self._decide_candidate(self.shadow)
        if now >= self._next_model_poll:
            self._next_model_poll = now + self.config.model_poll_s
            self._poll_model()

    def _update_ready(self) -> None:
        consumer = self.consumer
        ok = consumer is not None and self.delivery.producer is not None and self._healthy
        if ok:
            assert consumer is not None  # noqa: S101
            try:
                # Ready = model loaded, producer healthy and the group's coordinator
                # reachable. Joining the group is not waited for: a rebalance is normal
                # operation (it would flap /readyz) and on the embedded broker the first
                # join takes ~session_timeout/2. But an agent left without a partition
                # for longer than unassigned_limit_s while its topic has some is not
                # serving (a wedged coordinator): not ready (see _starved).
                ok = consumer.coordinator_known() and not self._starved()
            except Exception:  # noqa: BLE001  internals moved: report not ready, loudly
                logger.exception("readiness check failed")
                ok = False
        self._set_ready(ok)

    def _starved(self) -> bool:
        starved = self.membership.starved(time.monotonic())
        if starved and self._ready:  # logged once, as it turns not ready
            logger.warning(
                'no partition of topic="%s" (%d partitions) for over %.0f s: not ready. The '
                "group coordinator may be wedged (restart churn on the embedded broker), or "
                "the group has more agents than partitions (then --unassigned-limit-s 0)",
                self.topic,
                self.membership.topic_partitions or 0,
                self.config.unassigned_limit_s,
            )
        return starved

    def _set_ready(self, ok: bool) -> None:
        if ok != self._ready:
            self._ready = ok
            self._was_ready = self._was_ready or ok
            self.metrics.ready.set(1 if ok else 0)
            if ok:
                m = self.model.manifest
                logger.info(
                    'agent ready topic="%s" partitions=%s group="%s" model="%s" version="%s"',
                    self.topic,
                    sorted(self.assigned),
                    self.group_id,
                    m.name,
                    m.version,
                )
            else:
                logger.info("agent not ready")

    def _update_lag(self) -> None:
        consumer = self.consumer
        if consumer is None:
            return
        for p in self.assigned:
            try:
                lag = consumer.lag(p, self.offsets.next.get(p))
            except Exception:  # noqa: BLE001, S112  not assigned any more, broker away
                continue
            if lag is not None:
                self.metrics.consumer_lag.labels(topic=self.topic, partition=str(p)).set(lag)

    def _poll_model(self) -> None:
        try:
            new = self.store.poll()
        except Exception:  # noqa: BLE001  a model source failing must not stop serving
            logger.exception("model store poll failed; the current model keeps serving")
            return
        if new is not None:
            self._switch_to(new, why="switched")
        self._follow_candidate()

    # ---------------------------------------------------------- shadow/promote

    def _set_shadow(self, shadow: Shadow | None) -> None:
        self.shadow = shadow
        self.answers.shadow = shadow

    def _follow_candidate(self) -> None:
        """Shadow the store's candidate (docs/models.md "Shadow and promote"); stop
        shadowing one the store dropped (a pin, a newer version, withdrawn)."""
        candidate_of = getattr(self.store, "candidate", None)
        try:
            candidate = candidate_of() if candidate_of is not None else None
        except Exception:  # noqa: BLE001  the store failing must not stop serving
            logger.exception("model store candidate() failed")
            return
        shadow = self.shadow
        if shadow is not None and shadow.candidate is not candidate:
            shadow.close()
            self._set_shadow(None)
        if candidate is None or self.shadow is not None:
            return
        self._set_shadow(
            Shadow(
                candidate=candidate,
                serving_prep=self.prep,
                gates=self.gates,
                share=self.config.shadow_share,
                metrics=self.metrics,
                queue_batches=self.config.shadow_queue,
            )
        )

    def _decide_candidate(self, shadow: Shadow) -> None:
        """The gates decided: serve the candidate from the next batch on, or drop it."""
        decision = shadow.decision
        assert decision is not None  # noqa: S101
        candidate = shadow.candidate
        self._set_shadow(None)
        if decision.result != "promoted":
            shadow.close()
            self.store.reject(candidate, decision)
            return
        shadow.close(release=False)
        new = self.store.promote(candidate, decision)
        if new is None:  # the store moved on meanwhile (a pin, a newer version)
            candidate.runtime.close()
            return
        self._switch_to(new, why="promoted")

    def _switch_to(self, new: Any, *, why: str) -> None:
        """Serve ``new`` from the next batch on (the old model finishes the pending one)."""
        old = self.model.manifest
        if type(new.preprocessing) is not type(self.prep):
            logger.error(
                'model version="%s" has task "%s" but this agent serves "%s"; not switching',
                new.manifest.version,
                new.manifest.task,
                old.task,
            )
            return
        try:
            self._run_all()  # the old model finishes what it was given
        finally:
            self.model = new
            self._set_preprocessing(new.preprocessing)
            self.answers.gate.reset()
        logger.info(
            'model %s name="%s" from_version="%s" to_version="%s" sha256=%s',
            why,
            new.manifest.name,
            old.version,
            new.manifest.version,
            new.manifest.model_sha256[:12],
        )

    def _roll_back_bad_model(self) -> None:
        """The serving model fails its output gate: back to the previous verified version."""
        m = self.model.manifest
        share = self.answers.gate.share
        self.answers.gate.reset()  # judge afresh whatever serves next (also if no rollback exists)
        try:
            previous = self.store.rollback()
        except Exception as exc:  # noqa: BLE001  nothing to roll back to: keep serving
            logger.error(  # noqa: TRY400 (the cause is in the message)
                'model version="%s" gives unusable outputs for %.0f%% of recent inputs, but '
                "cannot be rolled back: %s",
                m.version,
                100 * share,
                exc,
            )
            return
        self.metrics.model_rollbacks.labels(reason="bad_model_output").inc()
        logger.error(
            'model version="%s" gives unusable outputs for %.0f%% of recent inputs: rolled '
            'back to version="%s"',
            m.version,
            100 * share,
            previous.manifest.version,
        )
        self.model = previous
        self._set_preprocessing(previous.preprocessing)


def _nothing_held(_partition: int) -> int | None:
    return None


def _on_partitions(partitions: set[int], item: Pending) -> bool:
    return item.partition in partitions
