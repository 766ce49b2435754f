"""``edgeinfer monitor``: online accuracy per model version, from results joined with feedback.

Consumes ``inference.results`` and ``feedback`` in a consumer group of its own, joins each
result with the true label of its input (:mod:`fleet.join`, bounded memory) and serves
Prometheus metrics on ``--metrics-port`` (docs/metrics.md, "Monitor metrics"), with
``/healthz`` and ``/readyz`` (the agent's bounded HTTP server, :mod:`edge_agent.health`).

One process serves a fleet: results and feedback of one input may sit in any partitions
of their topics, so the join needs all of them in one place. A second monitor in the
same group would get half of the partitions and join less; run one (a restart loses
only what was waiting to be joined). Malformed messages on either topic are counted
(``outcome="invalid"``) and skipped; nothing a topic carries stops the monitor.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fleet.join import (
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_VERSIONS,
    DEFAULT_MAX_WAIT_S,
    DEFAULT_WINDOW,
    FeedbackJoin,
    JoinSnapshot,
    Key,
    Side,
)
from stream import topics
from stream.codecs import decode_feedback, decode_result
from stream.exceptions import ConfigError, DecodeError
from stream.settings import KafkaSettings

logger = logging.getLogger(__name__)

DEFAULT_GROUP = "edgeinfer-monitor"
DEFAULT_METRICS_PORT = 9401
#: Longest model name or version exported as a label (longer ones are invalid results).
MAX_LABEL_VALUE_CHARS = 128
COMMIT_INTERVAL_S = 5.0
#: /healthz answers 503 when the loop has not completed a step for this long.
STALL_S = 120.0
_LOG_EVERY_S = 10.0


@dataclass(frozen=True, kw_only=True)
class MonitorConfig:
    results_topic: str = topics.RESULTS
    feedback_topic: str = topics.FEEDBACK
    group: str = DEFAULT_GROUP
    from_beginning: bool = False
    window: int = DEFAULT_WINDOW
    max_pending: int = DEFAULT_MAX_PENDING
    max_wait_s: float = DEFAULT_MAX_WAIT_S
    max_versions: int = DEFAULT_MAX_VERSIONS

    def __post_init__(self) -> None:
        for flag, value in (
            ("--window", self.window),
            ("--max-pending", self.max_pending),
            ("--max-versions", self.max_versions),
        ):
            if value < 1:
                msg = f"{flag} must be >= 1, got {value}"
                raise ConfigError(msg)
        if not self.max_wait_s > 0:
            msg = f"--max-wait-s must be > 0 seconds, got {self.max_wait_s}"
            raise ConfigError(msg)


class Monitor:
    """The join fed from Kafka records; :meth:`collect` is its Prometheus collector."""

    def __init__(self, config: MonitorConfig, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.join = FeedbackJoin(
            window=config.window,
            max_results=config.max_pending,
            max_feedback=config.max_pending,
            max_wait_s=config.max_wait_s,
            max_versions=config.max_versions,
        )
        self._clock = clock
        self._lock = threading.Lock()
        self.partitions_assigned = 0
        self.last_step = clock()
        self._next_log = 0.0

    # ------------------------------------------------------------------ records

    def handle(self, topic: str, partition: int, offset: int, value: Any, headers: Any) -> None:
        """One record of the results or the feedback topic (never raises)."""
        side: Side = "results" if topic == self.config.results_topic else "feedback"
        try:
            if side == "results":
                self._result(value)
            else:
                self._feedback(value, headers)
        except DecodeError as exc:
            self._invalid(side, topic, partition, offset, exc.reason, str(exc))
        except Exception as exc:  # a bug must not stop the monitor; counted and logged
            logger.exception('monitor failed on topic="%s" partition=%d offset=%d', *(
                topic, partition, offset))  # fmt: skip
            self._invalid(side, topic, partition, offset, "internal_error", repr(exc))

    def _result(self, value: Any) -> None:
        result = decode_result(value)
        key = result_key(result.source)
        for what, text in (("model", result.model), ("version", result.version)):
            if not text or len(text) > MAX_LABEL_VALUE_CHARS:
                msg = f"the result's {what} must have 1-{MAX_LABEL_VALUE_CHARS} characters"
                raise DecodeError("too_large" if text else "missing_field", msg)
        with self._lock:
            self.join.add_result(
                key,
                # one copy of each name in memory, however many results wait
                model=sys.intern(result.model),
                version=sys.intern(result.version),
                label=sys.intern(result.label) if len(result.label) <= 64 else result.label,
                now=self._clock(),
            )

    def _feedback(self, value: Any, headers: Any) -> None:
        fb = decode_feedback(value, headers)
        with self._lock:
            self.join.add_feedback(fb.source, label=fb.label, now=self._clock())

    def _invalid(
        self, side: Side, topic: str, partition: int, offset: int, reason: str, text: str
    ) -> None:
        with self._lock:
            self.join.invalid(side)
        now = self._clock()
        if now >= self._next_log:
            self._next_log = now + _LOG_EVERY_S
            logger.warning(
                'skipped invalid message topic="%s" partition=%d offset=%d reason="%s" '
                'error="%s" (logged at most every %.0f s; counted in '
                "edgeinfer_monitor_messages_total)",
                topic,
                partition,
                offset,
                reason,
                text[:300],
                _LOG_EVERY_S,
            )

    def tick(self) -> None:
        """Housekeeping after each poll: age out what waited too long."""
        now = self._clock()
        with self._lock:
            self.join.expire(now)
        self.last_step = now

    # ------------------------------------------------------------------ metrics

    def snapshot(self) -> JoinSnapshot:
        with self._lock:
            return self.join.snapshot()

    def ready(self) -> bool:
        return self.partitions_assigned > 0

    def alive(self) -> str | None:
        idle = self._clock() - self.last_step
        return f"the poll loop has not advanced for {idle:.0f} s" if idle > STALL_S else None

    def collect(self) -> Iterator[Any]:
        snap = self.snapshot()
        labels = ["model", "version"]
        accuracy = GaugeMetricFamily(
            "edgeinfer_online_accuracy",
            "Share of correct results among the last --window results joined with feedback",
            labels=labels,
        )
        window = GaugeMetricFamily(
            "edgeinfer_online_window_results",
            "Joined results the online accuracy rests on (at most --window)",
            labels=labels,
        )
        joined = CounterMetricFamily(
            "edgeinfer_online_joined",
            "Results joined with feedback, by whether the prediction was correct",
            labels=[*labels, "outcome"],
        )
        for v in snap.versions:
            if v.accuracy is not None:
                accuracy.add_metric([v.model, v.version], v.accuracy)
            window.add_metric([v.model, v.version], v.window)
            joined.add_metric([v.model, v.version, "correct"], v.correct)
            joined.add_metric([v.model, v.version, "incorrect"], v.incorrect)
        messages = CounterMetricFamily(
            "edgeinfer_monitor_messages",
            "Results and feedback read, by outcome: matched, unmatched_evicted (waited past "
            "--max-pending or --max-wait-s), replaced (a second one for the same input), "
            "invalid (skipped)",
            labels=["kind", "outcome"],
        )
        for (side, outcome), n in snap.outcomes.items():
            messages.add_metric([side, outcome], n)
        pending = GaugeMetricFamily(
            "edgeinfer_monitor_pending",
            "Results waiting for their feedback and feedback waiting for its result",
            labels=["kind"],
        )
        for side, n in snap.pending.items():
            pending.add_metric([side], n)
        assigned = GaugeMetricFamily(
            "edgeinfer_monitor_partitions_assigned",
            "Partitions of the results and feedback topics this monitor reads",
        )
        assigned.add_metric([], self.partitions_assigned)
        yield from (accuracy, window, joined, messages, pending, assigned)


def result_key(source: dict[str, Any]) -> Key:
    """The join key of a result: its ``source`` topic, partition and offset."""
    topic, partition, offset = source.get("topic"), source.get("partition"), source.get("offset")
    if not isinstance(topic, str) or not topic:
        raise DecodeError("missing_field", "the result's source has no topic to join on")
    if not isinstance(partition, int) or not isinstance(offset, int):
        raise DecodeError(
            "missing_field", "the result's source lacks the partition or offset to join on"
        )
    return (topic, partition, offset)


class _Registered(Collector):
    def __init__(self, monitor: Monitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterator[Any]:
        return self._monitor.collect()


def monitor_registry(monitor: Monitor) -> CollectorRegistry:
    """A registry holding exactly the monitor's metrics."""
    registry = CollectorRegistry()
    registry.register(_Registered(monitor))
    return registry


# ------------------------------------------------------------------ Kafka loop


def run(
    settings: KafkaSettings,
    monitor: Monitor,
    *,
    stop: threading.Event,
    poll_timeout_ms: int = 500,
) -> None:
    """Consume both topics into ``monitor`` until ``stop`` is set."""
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata

    from stream.kafka import kafka_errors, make_consumer, topic_partitions

    cfg = monitor.config
    consumer = make_consumer(
        settings,
        group_id=cfg.group,
        auto_offset_reset="earliest" if cfg.from_beginning else "latest",
    )
    try:
        wanted = [cfg.results_topic, cfg.feedback_topic]
        for topic in wanted:
            topic_partitions(consumer, topic)  # a clear error when a topic is missing
        with kafka_errors(f"subscribing to {wanted}", settings):
            consumer.subscribe(wanted)
        next_commit = time.monotonic() + COMMIT_INTERVAL_S
        positions: dict[Any, int] = {}
        while not stop.is_set():
            with kafka_errors("polling", settings):
                batch = consumer.poll(timeout_ms=poll_timeout_ms, max_records=5000)
            for tp, records in batch.items():
                for rec in records:
                    monitor.handle(rec.topic, rec.partition, rec.offset, rec.value, rec.headers)
                if records:
                    positions[tp] = records[-1].offset + 1
            monitor.partitions_assigned = len(consumer.assignment())
            monitor.tick()
            if positions and time.monotonic() >= next_commit:
                owned = consumer.assignment()
                offsets = {
                    tp: OffsetAndMetadata(pos, "", -1)
                    for tp, pos in positions.items()
                    if tp in owned
                }
                try:
                    consumer.commit(offsets)
                except KafkaError as exc:  # a rebalance in between: the next commit retries
                    logger.warning("commit failed: %s", exc)
                positions.clear()
                next_commit = time.monotonic() + COMMIT_INTERVAL_S
    finally:
        consumer.close()


def _stop_on_sigterm(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)


def run_monitor(args: argparse.Namespace) -> int:
    """``edgeinfer monitor``."""
    from edge_agent.health import HealthServer
    from stream.kafka import quiet_kafka_logs
    from stream.settings import settings_from_args

    settings = settings_from_args(args)
    quiet_kafka_logs()
    config = MonitorConfig(
        results_topic=args.results_topic,
        feedback_topic=args.feedback_topic,
        group=args.group,
        from_beginning=args.from_beginning,
        window=args.window,
        max_pending=args.max_pending,
        max_wait_s=args.max_wait_s,
        max_versions=args.max_versions,
    )
    monitor = Monitor(config)
    server = HealthServer(
        registry=monitor_registry(monitor),
        ready=monitor.ready,
        alive=monitor.alive,
        host=args.metrics_host,
        port=args.metrics_port,
    )
    port = server.start()
    print(
        f"monitor: joining {config.results_topic!r} with {config.feedback_topic!r} "
        f"(group {config.group!r}); metrics on http://{args.metrics_host}:{port}/metrics",
        flush=True,
    )
    stop = threading.Event()
    _stop_on_sigterm(stop)
    try:
        run(settings, monitor, stop=stop)
    except KeyboardInterrupt:
        logger.debug("monitor interrupted")
    finally:
        server.stop()
    return 0
