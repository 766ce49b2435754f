"""Replay real datasets onto Kafka as a simulated fleet of devices.

Sensors: each recording (e.g. one BasicMotions sample, 100 steps x 6 channels) becomes one
device; its readings are sent one per message, keyed by the device id, and devices are
interleaved round-robin so the topic looks like a live fleet (one device's readings stay
in order in one partition). Images: each image is sent from one of ``devices`` simulated
cameras. The true label travels in the ``label`` header so accuracy can be measured
downstream. Every send is confirmed (acks=all) before the replay reports success.

With ``feedback`` (a topic name), the replayer also plays the labeller: once an input's
send is acknowledged, its record metadata says where it landed (topic, partition,
offset), and a feedback message with the input's true label goes to that topic
(docs/wire-format.md, "Feedback"), for a ``feedback_share`` of the inputs, after
``feedback_delay_s`` seconds.

Why one module of this size: the two replays share the paced, acknowledged sender, the
split/limit/repeat rules and the CLI handler; each kind adds only its message stream, so
they read best side by side.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal

import numpy as np
from kafka import KafkaProducer
from kafka.errors import KafkaError

from stream import content_types, topics
from stream.datasets import Dataset, load_dataset
from stream.drift import Drift
from stream.exceptions import BrokerError, ConfigError, DatasetError
from stream.kafka import ensure_topics, error_text, make_producer, quiet_kafka_logs
from stream.settings import KafkaSettings

logger = logging.getLogger(__name__)

Split = Literal["train", "test", "all"]
ImageFormat = Literal["png", "jpeg", "npy"]
Headers = list[tuple[str, bytes]]
#: ``progress(sent, total or None when endless, elapsed seconds)``
ProgressFn = Callable[[int, int | None, float], None]

SPLITS: tuple[str, ...] = ("train", "test", "all")
IMAGE_FORMATS: tuple[str, ...] = ("png", "jpeg", "npy")
DEFAULT_RATE = 100.0
_PREFIXES = {"basic-motions": "bm", "digits": "digits"}


@dataclass(frozen=True, kw_only=True)
class ReplayStats:
    """What a replay sent: every ``sent`` message was acknowledged by the broker."""

    topic: str
    sent: int
    devices: int
    seconds: float
    interrupted: bool = False
    #: Feedback messages sent (and acknowledged) to ``feedback_topic``.
    feedback: int = 0
    feedback_topic: str | None = None

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def summary(self, unit: str = "messages") -> str:
        how = "stopped by Ctrl-C after" if self.interrupted else "replayed"
        labels = (
            f"; {self.feedback} true labels to {self.feedback_topic!r}"
            if self.feedback_topic is not None
            else ""
        )
        return (
            f"{how} {self.sent} {unit} from {self.devices} devices to {self.topic!r} in "
            f"{self.seconds:.1f} s ({self.rate:.0f}/s){labels}, all acknowledged"
        )


@dataclass(frozen=True)
class _Message:
    key: str
    value: bytes
    headers: Headers
    #: The true label (sent as feedback when the replay has a feedback topic).
    label: str | None = None


@dataclass(eq=False)
class _Sender:
    """Paced producing with delivery accounting and periodic progress."""

    producer: KafkaProducer
    topic: str
    _: KW_ONLY
    rate: float
    total: int | None
    progress: ProgressFn | None
    progress_interval_s: float
    #: Called on the producer's IO thread with each acknowledged message and its metadata.
    on_acked: Callable[[_Message, Any], None] | None = None
    sent: int = field(default=0, init=False)
    _acked: int = field(default=0, init=False)
    _failed: int = field(default=0, init=False)
    _first_error: BaseException | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _start: float = field(default_factory=time.monotonic, init=False)
    _next_progress: float = field(init=False)

    def __post_init__(self) -> None:
        self._next_progress = self._start + self.progress_interval_s

    def _on_ok(self, message: _Message | None, metadata: Any) -> None:
        with self._lock:
            self._acked += 1
        if message is not None and self.on_acked is not None:
            self.on_acked(message, metadata)

    def _on_error(self, exc: BaseException) -> None:
        with self._lock:
            self._failed += 1
            if self._first_error is None:
                self._first_error = exc

    def _raise_failed(self) -> None:
        exc = self._first_error
        msg = (
            f"{self._failed} of {self.sent} messages to {self.topic!r} were not delivered; "
            f"first error: {error_text(exc) if exc else '?'}"
        )
        raise BrokerError(msg) from exc

    def send(self, message: _Message) -> None:
        if self.rate > 0:
            delay = self._start + self.sent / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        try:
            future = self.producer.send(
                self.topic,
                value=message.value,
                key=message.key.encode(),
                headers=message.headers,
            )
        except KafkaError as exc:
            msg = f"sending to {self.topic!r} failed: {error_text(exc)}"
            raise BrokerError(msg) from exc
        future.add_callback(self._on_ok, message if self.on_acked is not None else None)
        future.add_errback(self._on_error)
        self.sent += 1
        if self._failed:
            self._raise_failed()
        now = time.monotonic()
        if self.progress is not None and now >= self._next_progress:
            self._next_progress = now + self.progress_interval_s
            self.progress(self.sent, self.total, now - self._start)

    def finish(self, timeout_s: float) -> float:
        """Flush, check every send was acknowledged; returns the elapsed seconds."""
        try:
            self.producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            msg = f"flushing {self.sent} messages to {self.topic!r} failed: {exc}"
            raise BrokerError(msg) from exc
        deadline = time.monotonic() + timeout_s
        while self._acked + self._failed < self.sent and time.monotonic() < deadline:
            time.sleep(0.01)  # callbacks run on the client's IO thread just after flush
        if self._failed:
            self._raise_failed()
        if self._acked < self.sent:
            msg = (
                f"only {self._acked} of {self.sent} messages to {self.topic!r} were "
                f"acknowledged within {timeout_s:.0f} s; is the broker still up?"
            )
            raise BrokerError(msg)
        return time.monotonic() - self._start


@dataclass(eq=False)
class _Labeller:
    """Feedback for acknowledged inputs: the producer's IO thread queues each acked input
    (:meth:`acked`), the replay's thread sends the feedback once due (:meth:`send_due`)
    through an unpaced sender of its own (the IO thread must not block on a send)."""

    sender: _Sender
    _: KW_ONLY
    share: float
    delay_s: float
    _rng: random.Random = field(default_factory=lambda: random.Random(0), init=False)  # noqa: S311
    _due: deque[tuple[float, _Message]] = field(default_factory=deque, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def acked(self, message: _Message, metadata: Any) -> None:
        from stream.codecs import encode_feedback, feedback_headers
        from stream.schemas import Feedback

        if message.label is None or self._rng.random() >= self.share:
            return
        try:
            value = encode_feedback(
                Feedback(
                    source_topic=str(metadata.topic),
                    source_partition=int(metadata.partition),
                    source_offset=int(metadata.offset),
                    label=message.label,
                    ts=int(time.time() * 1000),
                    by="replay",
                )
            )
        except ValueError as exc:  # a label the contract refuses (empty, over 256 chars)
            logger.warning('no feedback for key="%s": %s', message.key, exc)
            return
        with self._lock:
            self._due.append(
                (time.monotonic() + self.delay_s, _Message(message.key, value, feedback_headers()))
            )

    def send_due(self, *, wait: bool = False) -> None:
        """Send the feedback that is due; ``wait``: all of it, sleeping until it is due."""
        while True:
            with self._lock:
                if not self._due:
                    return
                due, message = self._due[0]
                now = time.monotonic()
                if due > now and not wait:
                    return
                self._due.popleft()
            if due > now:
                time.sleep(due - now)
            self.sender.send(message)


def _labeller(
    producer: KafkaProducer,
    topic: str | None,
    *,
    share: float,
    delay_s: float,
    progress_interval_s: float,
) -> _Labeller | None:
    if topic is None:
        return None
    if not 0.0 <= share <= 1.0:
        msg = f"feedback share must be in [0, 1], got {share}"
        raise ConfigError(msg)
    if delay_s < 0:
        msg = f"feedback delay must be >= 0 seconds, got {delay_s}"
        raise ConfigError(msg)
    sender = _Sender(
        producer,
        topic,
        rate=0.0,
        total=None,
        progress=None,
        progress_interval_s=progress_interval_s,
    )
    return _Labeller(sender, share=share, delay_s=delay_s)


def _run(
    settings: KafkaSettings,
    messages: Iterator[_Message],
    *,
    topic: str,
    rate: float,
    total: int | None,
    devices: int,
    partitions: int | None,
    producer: KafkaProducer | None,
    progress: ProgressFn | None,
    progress_interval_s: float,
    flush_timeout_s: float,
    stop: threading.Event | None = None,
    feedback: str | None = None,
    feedback_share: float = 1.0,
    feedback_delay_s: float = 0.0,
) -> ReplayStats:
    if rate < 0:
        msg = f"rate must be >= 0 messages/s (0 = as fast as possible), got {rate}"
        raise ConfigError(msg)
    if partitions is not None:
        ensure_topics(settings, [topic] + ([feedback] if feedback else []), partitions=partitions)
    own = producer is None
    prod = make_producer(settings) if producer is None else producer
    labeller = _labeller(
        prod,
        feedback,
        share=feedback_share,
        delay_s=feedback_delay_s,
        progress_interval_s=progress_interval_s,
    )
    sender = _Sender(
        prod,
        topic,
        rate=rate,
        total=total,
        progress=progress,
        progress_interval_s=progress_interval_s,
        on_acked=labeller.acked if labeller is not None else None,
    )
    interrupted = False
    try:
        try:
            for message in messages:
                if stop is not None and stop.is_set():
                    interrupted = True
                    break
                sender.send(message)
                if labeller is not None:
                    labeller.send_due()
        except KeyboardInterrupt:
            interrupted = True
            logger.info('replay interrupted topic="%s" sent=%d', topic, sender.sent)
        seconds = sender.finish(flush_timeout_s)
        if labeller is not None:
            labeller.send_due(wait=True)
            labeller.sender.finish(flush_timeout_s)
    finally:
        if own:
            prod.close(timeout=flush_timeout_s)
    stats = ReplayStats(
        topic=topic,
        sent=sender.sent,
        devices=devices,
        seconds=seconds,
        interrupted=interrupted,
        feedback=labeller.sender.sent if labeller is not None else 0,
        feedback_topic=feedback,
    )
    logger.debug(
        'replay done topic="%s" sent=%d devices=%d seconds=%.2f',
        topic,
        stats.sent,
        stats.devices,
        stats.seconds,
    )
    return stats


# ------------------------------------------------------------------ dataset handling


def _load(dataset: str | Dataset, kind: str) -> Dataset:
    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    if ds.kind != kind:
        other = "replay images" if ds.kind == "image" else "replay sensors"
        msg = f"dataset {ds.name!r} holds {ds.kind} data, not {kind} data: use `edgeinfer {other}`"
        raise DatasetError(msg)
    return ds


def _recordings(ds: Dataset, split: str, limit: int | None) -> list[tuple[str, np.ndarray, int]]:
    """``[(split name, x, y)]`` of the chosen split(s), at most ``limit`` of them."""
    if split not in SPLITS:
        msg = f"split must be one of {', '.join(SPLITS)}, got {split!r}"
        raise ConfigError(msg)
    if limit is not None and limit < 1:
        msg = f"limit must be >= 1, got {limit}"
        raise ConfigError(msg)
    parts = [("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)]
    chosen = [p for p in parts if split in (p[0], "all")]
    items = [(name, x[i], int(y[i])) for name, x, y in chosen for i in range(len(x))]
    return items[:limit] if limit is not None else items


def _prefix(ds: Dataset, device_prefix: str | None) -> str:
    if device_prefix:
        return device_prefix
    return _PREFIXES.get(ds.name, ds.name.lower().replace(" ", "-") or "dev")


def _check_repeat(repeat: int) -> None:
    if repeat < 0:
        msg = f"repeat must be >= 0 (0 = until Ctrl-C), got {repeat}"
        raise ConfigError(msg)


def _repeats(repeat: int) -> Iterator[int]:
    r = 0
    while repeat == 0 or r < repeat:
        yield r
        r += 1


class _Clock:
    """Per-device timestamps: wall-clock ms, strictly increasing for each device."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def __call__(self, device_id: str) -> int:
        ts = max(int(time.time() * 1000), self._last.get(device_id, -1) + 1)
        self._last[device_id] = ts
        return ts


# ------------------------------------------------------------------ sensors


def _device_ids(recordings: list[tuple[str, np.ndarray, int]], prefix: str) -> list[str]:
    counters: dict[str, int] = {}
    ids = []
    for name, _, _ in recordings:
        index = counters.get(name, 0)
        counters[name] = index + 1
        ids.append(f"{prefix}-{name}-{index:03d}")
    return ids


def replay_sensors(
    settings: KafkaSettings,
    dataset: str | Dataset,
    *,
    topic: str = topics.SENSORS,
    rate: float = DEFAULT_RATE,
    split: Split = "test",
    limit: int | None = None,
    repeat: int = 1,
    device_prefix: str | None = None,
    partitions: int | None = 4,
    producer: KafkaProducer | None = None,
    progress: ProgressFn | None = None,
    progress_interval_s: float = 2.0,
    flush_timeout_s: float = 60.0,
    drift: Drift | None = None,
    stop: threading.Event | None = None,
    feedback: str | None = None,
    feedback_share: float = 1.0,
    feedback_delay_s: float = 0.0,
) -> ReplayStats:
    """Replay a sequence dataset as a fleet of devices, one reading per message.

    ``rate`` is readings per second over the whole fleet (0 = as fast as possible);
    ``repeat`` 0 replays until Ctrl-C or until ``stop`` is set; ``partitions`` (when not
    None) creates the topic with that many partitions if it does not exist yet; ``drift``
    changes the readings of some devices (:mod:`stream.drift`); ``feedback`` (a topic)
    sends each acknowledged reading's true label there, for ``feedback_share`` of them,
    ``feedback_delay_s`` after the acknowledgement (docs/streams.md, "Feedback").
    """
    _check_repeat(repeat)
    ds = _load(dataset, "sequence")
    _check_drift(drift, image=False, channels=int(ds.x_test.shape[-1]))
    recordings = _recordings(ds, split, limit)
    readings = sum(len(x) for _, x, _ in recordings)
    return _run(
        settings,
        _sensor_stream(
            ds, recordings, repeat=repeat, prefix=_prefix(ds, device_prefix), drift=drift
        ),
        topic=topic,
        rate=rate,
        total=readings * repeat if repeat else None,
        devices=len(recordings),
        partitions=partitions,
        producer=producer,
        progress=progress,
        progress_interval_s=progress_interval_s,
        flush_timeout_s=flush_timeout_s,
        stop=stop,
        feedback=feedback,
        feedback_share=feedback_share,
        feedback_delay_s=feedback_delay_s,
    )


def _sensor_stream(
    ds: Dataset,
    recordings: list[tuple[str, np.ndarray, int]],
    *,
    repeat: int,
    prefix: str,
    drift: Drift | None = None,
) -> Iterator[_Message]:
    from stream.codecs import encode_reading, sensor_headers

    ids = _device_ids(recordings, prefix)
    devices = [(ids[i], x, ds.labels[y]) for i, (_, x, y) in enumerate(recordings)]
    clock = _Clock()
    steps = max((len(x) for _, x, _ in devices), default=0)
    index = 0
    for _ in _repeats(repeat):
        for t in range(steps):
            for device_id, x, label in devices:
                if t >= len(x):
                    continue
                ts = clock(device_id)
                row = x[t]
                if drift is not None and drift.active(index, device_id):
                    row = drift.readings(row)
                index += 1
                yield _Message(
                    device_id,
                    encode_reading(device_id, ts, row.tolist()),
                    list(sensor_headers(device_id, ts, label=label)),
                    label,
                )


# ------------------------------------------------------------------ images


def _encoder(fmt: str) -> tuple[str, Callable[[np.ndarray], bytes]]:
    from stream import codecs

    encoders: dict[str, tuple[str, Callable[[np.ndarray], bytes]]] = {
        "png": (content_types.PNG, codecs.encode_png),
        "jpeg": (content_types.JPEG, codecs.encode_jpeg),
        "npy": (content_types.NPY, codecs.encode_npy),
    }
    if fmt not in encoders:
        msg = f"image format must be one of {', '.join(IMAGE_FORMATS)}, got {fmt!r}"
        raise ConfigError(msg)
    return encoders[fmt]


def replay_images(
    settings: KafkaSettings,
    dataset: str | Dataset,
    *,
    topic: str = topics.IMAGES,
    rate: float = DEFAULT_RATE,
    split: Split = "test",
    limit: int | None = None,
    repeat: int = 1,
    device_prefix: str | None = None,
    devices: int = 4,
    image_format: ImageFormat = "png",
    partitions: int | None = 4,
    producer: KafkaProducer | None = None,
    progress: ProgressFn | None = None,
    progress_interval_s: float = 2.0,
    flush_timeout_s: float = 60.0,
    drift: Drift | None = None,
    stop: threading.Event | None = None,
    feedback: str | None = None,
    feedback_share: float = 1.0,
    feedback_delay_s: float = 0.0,
) -> ReplayStats:
    """Replay an image dataset from ``devices`` simulated cameras (image i from camera
    i mod devices), encoded as PNG, JPEG or .npy, with the true label in a header;
    ``drift`` changes the frames of some cameras (:mod:`stream.drift`), ``stop`` ends an
    endless replay; ``feedback`` as in :func:`replay_sensors`."""
    if devices < 1:
        msg = f"devices must be >= 1, got {devices}"
        raise ConfigError(msg)
    _check_repeat(repeat)
    ds = _load(dataset, "image")
    _check_drift(drift, image=True, channels=int(ds.x_test.shape[-1]))
    content_type, encode = _encoder(image_format)
    recordings = _recordings(ds, split, limit)
    prefix = _prefix(ds, device_prefix)
    return _run(
        settings,
        _image_stream(ds, recordings, repeat, prefix, devices, content_type, encode, drift),
        topic=topic,
        rate=rate,
        total=len(recordings) * repeat if repeat else None,
        devices=min(devices, len(recordings)),
        partitions=partitions,
        producer=producer,
        progress=progress,
        progress_interval_s=progress_interval_s,
        flush_timeout_s=flush_timeout_s,
        stop=stop,
        feedback=feedback,
        feedback_share=feedback_share,
        feedback_delay_s=feedback_delay_s,
    )


def _image_stream(
    ds: Dataset,
    recordings: list[tuple[str, np.ndarray, int]],
    repeat: int,
    prefix: str,
    devices: int,
    content_type: str,
    encode: Callable[[np.ndarray], bytes],
    drift: Drift | None = None,
) -> Iterator[_Message]:
    from stream.codecs import image_headers

    clock = _Clock()
    index = 0
    for _ in _repeats(repeat):
        for i, (_, pixels, y) in enumerate(recordings):
            device_id = f"{prefix}-cam-{i % devices:02d}"
            ts = clock(device_id)
            headers = image_headers(content_type, device_id, ts, label=ds.labels[y])
            if drift is not None and drift.active(index, device_id):
                pixels = drift.image(pixels)
            index += 1
            yield _Message(device_id, encode(pixels), list(headers), ds.labels[y])


def _check_drift(drift: Drift | None, *, image: bool, channels: int) -> None:
    if drift is None:
        return
    if drift.for_images != image:
        what = "images" if drift.for_images else "sensor readings"
        msg = f"{drift.kind} drift applies to {what}: not to this replay"
        raise ConfigError(msg)
    drift.check_channels(channels)


# ------------------------------------------------------------------ CLI handler


def _print_progress(unit: str) -> ProgressFn:
    def report(sent: int, total: int | None, elapsed: float) -> None:
        of = f"/{total}" if total is not None else ""
        rate = sent / elapsed if elapsed > 0 else 0.0
        print(f"replay: sent {sent}{of} {unit} ({rate:.0f}/s)", file=sys.stderr, flush=True)

    return report


def _drift_from_args(args: argparse.Namespace) -> Drift | None:
    spec = getattr(args, "drift", None)
    if not spec:
        return None
    return Drift.parse(spec, devices=args.drift_devices, after=args.drift_after)


def run_replay(args: argparse.Namespace) -> int:
    """``edgeinfer replay sensors|images``."""
    from stream.settings import settings_from_args

    settings = settings_from_args(args)
    quiet_kafka_logs()
    common: dict[str, Any] = {
        "topic": args.topic,
        "rate": args.rate,
        "split": args.split,
        "limit": args.limit,
        "repeat": args.repeat,
        "device_prefix": args.device_prefix,
        "partitions": args.partitions,
        "drift": _drift_from_args(args),
        "feedback": args.feedback,
        "feedback_share": args.feedback_share,
        "feedback_delay_s": args.feedback_delay_s,
    }
    if args.kind == "sensors":
        unit = "readings"
        stats = replay_sensors(settings, args.dataset, progress=_print_progress(unit), **common)
    else:
        unit = "images"
        stats = replay_images(
            settings,
            args.dataset,
            devices=args.devices,
            image_format=args.format,
            progress=_print_progress(unit),
            **common,
        )
    print(stats.summary(unit))
    return 0
