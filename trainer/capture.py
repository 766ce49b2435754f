"""``kafka:TOPIC``: capture a topic written by ``edgeinfer replay`` into a training dataset.

The whole topic is read from the beginning to its end (the highwater of every partition at
the time each is first fetched). Every message needs the ``label`` header. Sensor readings
(JSON ``values``/``samples``) are grouped per device, in offset order, and cut into windows
of ``window`` readings (default: every reading of a device, up to ``max_window``); a new
label on a device starts a new recording. Readings and images are decoded with
:func:`stream.codecs.decode_sensor_record` and :func:`stream.codecs.decode_image`, exactly
as the agent decodes them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream import topics
from stream.codecs import content_type, decode_image, decode_sensor_record, headers_dict
from stream.content_types import SENSOR_CONTENT_TYPES
from stream.datasets import Dataset, stratified_split
from stream.exceptions import DatasetError, DecodeError
from stream.settings import KafkaSettings

logger = logging.getLogger(__name__)

DEFAULT_MAX_WINDOW = 512
DEFAULT_MAX_MESSAGES = 200_000


@dataclass
class _Recording:
    """Consecutive readings of one device under one label."""

    device_id: str
    label: str
    rows: list[np.ndarray] = field(default_factory=list)

    def samples(self) -> np.ndarray:
        return np.concatenate(self.rows).astype(np.float32)


@dataclass
class _Capture:
    recordings: list[_Recording] = field(default_factory=list)
    open: dict[str, _Recording] = field(default_factory=dict)
    images: list[np.ndarray] = field(default_factory=list)
    image_labels: list[str] = field(default_factory=list)
    unlabelled: int = 0
    undecodable: int = 0
    first_error: str = ""
    read: int = 0

    def add(self, value: bytes | None, headers: dict[str, str]) -> None:
        self.read += 1
        label = headers.get(topics.H_LABEL)
        if not label:
            self.unlabelled += 1
            return
        try:
            if _is_sensor(value, headers):
                chunk = decode_sensor_record(value, headers)
                rec = self.open.get(chunk.device_id)
                if rec is None or rec.label != label:
                    rec = _Recording(chunk.device_id, label)
                    self.open[chunk.device_id] = rec
                    self.recordings.append(rec)
                rec.rows.append(chunk.samples)
            else:
                frame = decode_image(value, headers)
                self.images.append(frame.pixels)
                self.image_labels.append(label)
        except DecodeError as exc:
            self.undecodable += 1
            self.first_error = self.first_error or f"{exc.reason}: {exc}"


def _is_sensor(value: bytes | None, headers: dict[str, str]) -> bool:
    """A sensor reading: a sensor content type, or no content type and a JSON object."""
    ctype = content_type(headers)
    if ctype:
        return ctype in SENSOR_CONTENT_TYPES
    return value is not None and value[:1] == b"{"


def capture_topic(
    topic: str,
    *,
    settings: KafkaSettings,
    window: int | None = None,
    max_window: int = DEFAULT_MAX_WINDOW,
    max_messages: int = DEFAULT_MAX_MESSAGES,
    timeout_s: float = 30.0,
    seed: int = 0,
    test_fraction: float = 0.25,
) -> Dataset:
    """Read ``topic`` to its end and turn it into a :class:`Dataset` (stratified split)."""
    if window is not None and window < 1:
        msg = f"--window must be >= 1 readings, got {window}"
        raise DatasetError(msg)
    cap = _read(topic, settings=settings, max_messages=max_messages, timeout_s=timeout_s)
    if cap.read == 0:
        msg = f"topic {topic!r} is empty; fill it with `edgeinfer replay ... --topic {topic}`"
        raise DatasetError(msg)
    if cap.unlabelled == cap.read:
        msg = (
            f"none of the {cap.read} messages on {topic!r} has a {topics.H_LABEL!r} header; "
            "training needs the true label (written by `edgeinfer replay`)"
        )
        raise DatasetError(msg)
    if cap.undecodable:
        logger.warning(
            'capture skipped undecodable messages topic="%s" count=%d first="%s"',
            topic, cap.undecodable, cap.first_error,
        )  # fmt: skip
    if cap.recordings and cap.images:
        msg = f"topic {topic!r} mixes sensor readings and images; capture one kind per topic"
        raise DatasetError(msg)
    if cap.images:
        x, names = _stack_images(cap, topic)
    elif cap.recordings:
        x, names = _windows(cap.recordings, topic, window=window, max_window=max_window)
    else:
        msg = f"no message on {topic!r} could be decoded (first error: {cap.first_error})"
        raise DatasetError(msg)
    labels = sorted(set(names))
    index = {name: i for i, name in enumerate(labels)}
    y = np.array([index[n] for n in names], dtype=np.int64)
    x_tr, y_tr, x_te, y_te = stratified_split(x, y, test_fraction=test_fraction, seed=seed)
    logger.info(
        'captured topic="%s" messages=%d samples=%d shape=%s classes=%d',
        topic, cap.read, len(x), tuple(x.shape[1:]), len(labels),
    )  # fmt: skip
    return Dataset(
        name=topic,
        kind="image" if cap.images else "sequence",
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        labels=labels,
    )


def _read(topic: str, *, settings: KafkaSettings, max_messages: int, timeout_s: float) -> _Capture:
    from kafka import TopicPartition

    from stream.kafka import make_consumer, topic_partitions

    consumer = make_consumer(settings, group_id=None)
    cap = _Capture()
    try:
        parts = [TopicPartition(topic, p) for p in topic_partitions(consumer, topic)]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        deadline = time.monotonic() + timeout_s
        ends: dict[Any, int] = {}
        while cap.read < max_messages:
            batches = consumer.poll(timeout_ms=300, max_records=min(5000, max_messages))
            for tp, records in batches.items():
                for record in records:
                    if tp in ends and record.offset >= ends[tp]:
                        continue
                    cap.add(record.value, headers_dict(record.headers))
            for tp in parts:
                high = consumer.highwater(tp)
                if tp not in ends and high is not None:
                    ends[tp] = int(high)
            if len(ends) == len(parts) and all(consumer.position(tp) >= ends[tp] for tp in parts):
                break
            if time.monotonic() >= deadline:
                msg = (
                    f"reading {topic!r} to its end took longer than {timeout_s:.0f} s "
                    f"({cap.read} messages read); raise --capture-timeout or --max-messages"
                )
                raise DatasetError(msg)
    finally:
        consumer.close()
    return cap


def _windows(
    recordings: list[_Recording], topic: str, *, window: int | None, max_window: int
) -> tuple[np.ndarray, list[str]]:
    series = [(rec.label, rec.samples()) for rec in recordings]
    channels = {s.shape[1] for _, s in series}
    if len(channels) > 1:
        msg = f"devices on {topic!r} send different channel counts {sorted(channels)}"
        raise DatasetError(msg)
    length = window or min(min(len(s) for _, s in series), max_window)
    xs: list[np.ndarray] = []
    names: list[str] = []
    short = 0
    for label, s in series:
        if len(s) < length:
            short += 1
            continue
        for start in range(0, len(s) - length + 1, length):
            xs.append(s[start : start + length])
            names.append(label)
    if short:
        logger.warning("capture dropped recordings shorter than the window count=%d", short)
    if not xs:
        msg = (
            f"no device on {topic!r} sent {length} readings (--window); the longest sent "
            f"{max(len(s) for _, s in series)}"
        )
        raise DatasetError(msg)
    return np.stack(xs).astype(np.float32), names


def _stack_images(cap: _Capture, topic: str) -> tuple[np.ndarray, list[str]]:
    shapes = {im.shape for im in cap.images}
    if len(shapes) > 1:
        msg = f"images on {topic!r} have different sizes {sorted(shapes)[:4]}; train on one size"
        raise DatasetError(msg)
    return np.stack(cap.images).astype(np.uint8), list(cap.image_labels)
