"""``edgeinfer tail``: print what flows on a topic, decoded, one message at a time.

Every message shows its topic, partition, offset, key and headers, then its value decoded
by what it is: a sensor reading (JSON), an image (content type and shape), an inference
result, a dead letter or a model announcement. Undecodable values are shown raw with the
reason, so tail is also the tool to look at bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Any

from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition

from stream import topics
from stream.content_types import IMAGE_CONTENT_TYPES
from stream.exceptions import DecodeError, EdgeInferError
from stream.kafka import (
    kafka_errors,
    make_consumer,
    quiet_kafka_logs,
    seek_to_highwater,
    topic_partitions,
)
from stream.settings import KafkaSettings

logger = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]
_MAX_TEXT = 400


def _short(text: str, limit: int = _MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _raw(value: bytes | None) -> str:
    if value is None:
        return "null (tombstone)"
    try:
        return _short(value.decode("utf-8"))
    except UnicodeDecodeError:
        return f"{len(value)} bytes {value[:32].hex()}{'...' if len(value) > 32 else ''}"


def _headers_text(headers: Headers) -> str:
    parts = []
    for name, raw in headers:
        try:
            shown = raw.decode("utf-8") if raw is not None else "null"
        except UnicodeDecodeError:
            shown = raw.hex()
        parts.append(f"{name}={_short(shown, 120)}")
    return " ".join(parts) if parts else "(none)"


def describe_value(value: bytes | None, headers: Headers) -> str:
    """A one-line human description of a message value (never raises on bad input)."""
    from stream import codecs

    hdrs = codecs.headers_dict(list(headers))
    try:
        if topics.H_ERROR_TYPE in hdrs:
            dead = codecs.decode_dead_letter(value, list(headers))
            return (
                f"dead letter {dead.error_type}: {_short(dead.error_message, 200)} "
                f"(from {dead.source_topic}[{dead.source_partition}]@{dead.source_offset}, "
                f"agent {dead.agent_id}); original value {_raw(dead.value)}"
            )
        if value is None:
            return _raw(value)
        if hdrs.get(topics.H_CONTENT_TYPE) in IMAGE_CONTENT_TYPES:
            frame = codecs.decode_image(value, list(headers))
            shape = "x".join(str(d) for d in frame.pixels.shape)
            return f"{frame.content_type} {shape} ({len(value)} bytes) device={frame.device_id}"
        return _describe_json(value)
    except DecodeError as exc:
        return f"undecodable ({exc.reason}): {exc}; raw {_raw(value)}"


def _describe_json(value: bytes) -> str:
    from stream import codecs

    try:
        data: Any = json.loads(value)
    except (UnicodeDecodeError, ValueError):
        return f"not JSON: {_raw(value)}"
    if not isinstance(data, dict):
        return _raw(value)
    if "samples" in data or "values" in data:
        chunk = codecs.decode_sensor(value)
        return f"sensor {chunk.n}x{chunk.channels} {_raw(value)}"
    if "manifest" in data and "name" in data:
        where = "inline model" if "model_b64" in data else f"uri {data.get('uri')}"
        return f"model announcement {data.get('name')}@{data.get('version')} ({where})"
    if "model" in data and "label" in data:
        res = codecs.decode_result(value)
        truth = f" true={res.true_label}" if res.true_label is not None else ""
        e2e = res.latency_ms.get("e2e")
        latency = f" e2e={e2e:.1f}ms" if isinstance(e2e, int | float) else ""
        return (
            f"result device={res.device_id} model={res.model}@{res.version} "
            f"label={res.label} score={res.score:.3f}{truth}{latency}"
        )
    return _raw(value)


def format_record(record: Any) -> str:
    """Two lines for one consumed record: where it is and what it holds."""
    key = record.key.decode("utf-8", errors="replace") if record.key is not None else None
    headers = list(record.headers or [])
    return (
        f"{record.topic}[{record.partition}]@{record.offset} key={key!r} "
        f"headers: {_headers_text(headers)}\n  {describe_value(record.value, headers)}"
    )


def _batches(
    consumer: KafkaConsumer, *, idle_timeout_s: float | None, settings: KafkaSettings
) -> Iterator[list[Any]]:
    """Non-empty polled batches (records in partition order) until idle for too long."""
    idle_since = time.monotonic()
    while True:
        with kafka_errors("polling", settings):
            batch = consumer.poll(timeout_ms=500)
        if not batch:
            if idle_timeout_s is not None and time.monotonic() - idle_since >= idle_timeout_s:
                return
            continue
        idle_since = time.monotonic()
        yield [r for tp in sorted(batch, key=lambda t: (t.topic, t.partition)) for r in batch[tp]]


def tail(
    settings: KafkaSettings,
    topic: str,
    *,
    max_messages: int | None = None,
    from_beginning: bool = False,
    group_id: str | None = None,
    idle_timeout_s: float | None = None,
    out: Callable[[str], None] = print,
) -> int:
    """Print messages of ``topic`` until ``max_messages`` or ``idle_timeout_s`` (or Ctrl-C).

    Without ``group_id`` every partition is read and nothing is committed; with one, the
    consumer joins that group and commits what it printed. Returns the count printed.
    """
    if max_messages is not None and max_messages < 1:
        msg = f"--max must be >= 1, got {max_messages}"
        raise EdgeInferError(msg)
    reset = "earliest" if from_beginning else "latest"
    consumer = make_consumer(settings, group_id=group_id, auto_offset_reset=reset)
    count = 0
    pending: dict[TopicPartition, OffsetAndMetadata] = {}
    try:
        if group_id is None:
            parts = [TopicPartition(topic, p) for p in topic_partitions(consumer, topic)]
            consumer.assign(parts)
            if from_beginning:
                consumer.seek_to_beginning(*parts)
            else:
                seek_to_highwater(consumer, parts)
        else:
            with kafka_errors(f"subscribing to {topic!r}", settings):
                consumer.subscribe([topic])
        for batch in _batches(consumer, idle_timeout_s=idle_timeout_s, settings=settings):
            done = False
            for record in batch:
                out(format_record(record))
                count += 1
                if group_id is not None:
                    offsets = {
                        TopicPartition(record.topic, record.partition): OffsetAndMetadata(
                            record.offset + 1, "", -1
                        )
                    }
                    pending.update(offsets)
                if max_messages is not None and count >= max_messages:
                    done = True
                    break
            if pending:
                with kafka_errors("committing offsets", settings):
                    consumer.commit(dict(pending))
                pending.clear()
            if done:
                break
    except KeyboardInterrupt:
        logger.debug("tail interrupted after %d messages", count)
    finally:
        consumer.close()
    return count


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_tail(args: argparse.Namespace) -> int:
    """``edgeinfer tail TOPIC``."""
    from stream.settings import settings_from_args

    settings = settings_from_args(args)
    quiet_kafka_logs()
    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGTERM, _raise_interrupt)
    tail(
        settings,
        args.topic,
        max_messages=args.max,
        from_beginning=args.from_beginning,
        group_id=args.group,
        idle_timeout_s=args.idle_timeout,
        out=lambda line: print(line, flush=True),
    )
    return 0
