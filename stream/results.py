"""Results consumers: read ``inference.results`` (and dead letters) and aggregate them.

Used by the demo's live view, by tests and by ``edgeinfer results``. Reads without a
consumer group (it assigns every partition and starts from the beginning or the end), so
it never takes partitions away from an application's group.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from kafka import KafkaConsumer, TopicPartition

from stream import topics
from stream.codecs import decode_dead_letter, decode_result
from stream.exceptions import DecodeError
from stream.kafka import make_consumer, seek_to_highwater, topic_partitions
from stream.schemas import InferenceResult
from stream.settings import KafkaSettings

logger = logging.getLogger(__name__)

#: Latencies kept for percentiles: the newest N per aggregate (bounded memory).
LATENCY_WINDOW = 20_000


@dataclass
class ResultStats:
    """Running aggregate of results: counts, accuracy against true labels, latency."""

    results: int = 0
    labelled: int = 0
    correct: int = 0
    deadletters: int = 0
    undecodable: int = 0
    by_version: Counter[str] = field(default_factory=Counter)
    by_agent: Counter[str] = field(default_factory=Counter)
    agent_version: dict[str, str] = field(default_factory=dict)
    deadletter_reasons: Counter[str] = field(default_factory=Counter)
    #: (topic, partition, offset) of every input answered: to prove nothing was lost.
    answered: set[tuple[str, int, int]] = field(default_factory=set)
    #: Results of windowed (sensor) inputs per device.
    windows_by_device: Counter[str] = field(default_factory=Counter)
    e2e_ms: list[float] = field(default_factory=list)
    infer_ms: list[float] = field(default_factory=list)
    first_at: float | None = None
    last_at: float | None = None

    def add_result(self, r: InferenceResult) -> None:
        now = time.monotonic()
        self.first_at = self.first_at if self.first_at is not None else now
        self.last_at = now
        self.results += 1
        self.by_version[f"{r.model}:{r.version}"] += 1
        self.by_agent[r.agent_id] += 1
        self.agent_version[r.agent_id] = f"{r.model}:{r.version}"
        if r.true_label is not None:
            self.labelled += 1
            self.correct += int(r.true_label == r.label)
        src = r.source
        if "first_offset" in src:
            # A window: its readings interleave with other devices' in the partition, so
            # the unit of accounting is windows per device, not offsets.
            self.windows_by_device[r.device_id] += 1
        else:
            try:
                self.answered.add((str(src["topic"]), int(src["partition"]), int(src["offset"])))
            except (KeyError, TypeError, ValueError):
                pass
        for store, key in ((self.e2e_ms, "e2e"), (self.infer_ms, "infer")):
            if key in r.latency_ms:
                store.append(float(r.latency_ms[key]))
                if len(store) > LATENCY_WINDOW:
                    del store[: len(store) - LATENCY_WINDOW]

    def add_deadletter(self, reason: str, topic: str, partition: int, offset: int) -> None:
        self.deadletters += 1
        self.deadletter_reasons[reason] += 1
        self.answered.add((topic, partition, offset))

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None

    def latency_percentiles(self, which: str = "e2e") -> dict[str, float]:
        values = self.e2e_ms if which == "e2e" else self.infer_ms
        if not values:
            return {}
        arr = np.asarray(values, dtype=np.float64)
        return {
            "p50": float(np.percentile(arr, 50)),
            "p99": float(np.percentile(arr, 99)),
            "max": float(arr.max()),
        }

    def summary(self) -> dict[str, Any]:
        return {
            "results": self.results,
            "labelled": self.labelled,
            "accuracy": self.accuracy,
            "deadletters": self.deadletters,
            "deadletter_reasons": dict(self.deadletter_reasons),
            "undecodable": self.undecodable,
            "by_version": dict(self.by_version),
            "by_agent": dict(self.by_agent),
            "e2e_latency_ms": self.latency_percentiles("e2e"),
            "infer_latency_ms": self.latency_percentiles("infer"),
        }


class ResultsCollector:
    """Reads the results and dead-letter topics into :class:`ResultStats`, per model.

    Call :meth:`poll` repeatedly (it returns quickly); read :attr:`stats` (all) or
    :attr:`per_model`. ``from_beginning=False`` starts at the topics' current end;
    ``on_result`` is called with every decoded result (the drift demo's timeline).
    """

    def __init__(
        self,
        *,
        settings: KafkaSettings,
        results_topic: str = topics.RESULTS,
        deadletter_topic: str | None = topics.DEADLETTER,
        from_beginning: bool = True,
        on_result: Callable[[InferenceResult], None] | None = None,
    ) -> None:
        self.stats = ResultStats()
        self._on_result = on_result
        self.per_model: dict[str, ResultStats] = defaultdict(ResultStats)
        self.per_source: dict[str, ResultStats] = defaultdict(ResultStats)
        self._results_topic = results_topic
        self._consumer: KafkaConsumer = make_consumer(
            settings, group_id=None, auto_offset_reset="earliest"
        )
        wanted = [results_topic] + ([deadletter_topic] if deadletter_topic else [])
        parts = [TopicPartition(t, p) for t in wanted for p in topic_partitions(self._consumer, t)]
        self._consumer.assign(parts)
        if from_beginning:
            self._consumer.seek_to_beginning(*parts)
        else:
            seek_to_highwater(self._consumer, parts)

    def poll(self, timeout_ms: int = 200) -> int:
        """Consume what is there; return how many messages were read."""
        batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=5000)
        n = 0
        for tp, records in batches.items():
            for rec in records:
                n += 1
                if tp.topic == self._results_topic:
                    self._add_result(rec.value)
                else:
                    self._add_deadletter(rec.value, rec.headers)
        return n

    def _add_result(self, value: bytes | None) -> None:
        try:
            r = decode_result(value or b"")
        except DecodeError as exc:
            self.stats.undecodable += 1
            logger.warning('undecodable result reason="%s" error="%s"', exc.reason, exc)
            return
        self.stats.add_result(r)
        if self._on_result is not None:
            self._on_result(r)
        self.per_model[r.model].add_result(r)
        self.per_source[str(r.source.get("topic", "?"))].add_result(r)

    def _add_deadletter(self, value: bytes | None, headers: Any) -> None:
        try:
            dl = decode_dead_letter(value, headers)
        except DecodeError as exc:
            self.stats.undecodable += 1
            logger.warning('undecodable dead letter error="%s"', exc)
            return
        for stats in (self.stats, self.per_source[dl.source_topic]):
            stats.add_deadletter(
                dl.error_type, dl.source_topic, dl.source_partition, dl.source_offset
            )

    def wait_for(self, predicate: Any, timeout_s: float) -> bool:
        """Poll until ``predicate(self)`` is true or the deadline passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.poll()
            if predicate(self):
                return True
        return bool(predicate(self))

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> ResultsCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
