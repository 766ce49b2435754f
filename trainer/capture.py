"""``kafka:TOPIC``: turn a topic's messages into labelled model inputs.

The topic is read from its beginning to its end (:func:`trainer.topic_read.read_topic`).
Readings and images are decoded with :func:`stream.codecs.decode_sensor_record` and
:func:`stream.codecs.decode_image`, exactly as the agent decodes them.

**Labels.** An input's label is, in this order: the feedback label of its place in Kafka
(``--labels-from``, :mod:`trainer.feedback`), else its own ``label`` header (written by
``edgeinfer replay`` or a device), else none: the input is counted as unlabelled and
skipped. The place of a message of the ``samples`` topic (docs/wire-format.md, "Samples")
is its source, ``(source-topic, source-partition, source-last-offset)``: the input the
agent answered (for a sensor window, the window's last reading, the offset its result
names); the place of any other message is its own ``(topic, partition, offset)``.

**Inputs.** Sensor readings (JSON ``values``/``samples``) are grouped per device, in offset
order, into recordings (a new label on a device starts a new one) and cut into windows of
``window`` readings; without a window, every reading of a device up to ``max_window`` (then
the whole topic must fit in memory). A sample is a whole window already: each sample is its
own recording. Images are fitted to one geometry by :func:`stream.preprocessing.resize_image`
(the agent's arithmetic): a :class:`Target`'s (``--like``, ``--mix``: the serving model's
geometry and labels), else ``--image-size``/``--color``, else the first image's size and
colour. An input of another kind, with other channels, or (with a target) with a label
outside its labels is counted and skipped. Every count goes to ``report.json`` ``capture``.

:func:`capture_topic` keeps every input and returns arrays; :mod:`trainer.kafka_data` reads
the same inputs one pass at a time (``sink``) when they do not fit in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream import topics
from stream.codecs import (
    content_type,
    decode_image,
    decode_sample,
    decode_sensor_record,
    headers_dict,
)
from stream.content_types import SENSOR_CONTENT_TYPES
from stream.datasets import Dataset, stratified_split
from stream.exceptions import DatasetError, DecodeError
from stream.preprocessing import (
    ImageColor,
    ImagePreprocessing,
    Preprocessing,
    SequencePreprocessing,
    resize_image,
)
from stream.settings import KafkaSettings
from trainer.feedback import FeedbackLabels, Source
from trainer.topic_read import TopicSnapshot, read_topic

logger = logging.getLogger(__name__)

DEFAULT_MAX_WINDOW = 512
DEFAULT_MAX_MESSAGES = 200_000

#: Where an input is in the topic read: (partition, offset) of its (last) message.
Place = tuple[int, int]
#: Receives every input as it is cut: (uint8 image or float32 window, label, place).
Sink = Callable[[np.ndarray, str, Place], None]


@dataclass(frozen=True, kw_only=True)
class Target:
    """The geometry and labels captured inputs must have: a serving model's (``--like``)
    or a dataset's (``--mix``). ``labels`` is the class order of the model to train."""

    preprocessing: Preprocessing
    labels: list[str]
    #: Where it came from, for messages: ``bundle PATH`` or ``dataset NAME``.
    source: str

    @property
    def kind(self) -> str:
        return "image" if isinstance(self.preprocessing, ImagePreprocessing) else "sequence"


@dataclass(frozen=True, kw_only=True)
class CapturedDataset(Dataset):
    """A dataset read from a topic, with what the capture found (``report.json`` ``capture``)."""

    capture: dict[str, Any]
    #: Each training input's weight in the loss (``--mix``); None: all 1.
    train_weights: np.ndarray | None = None
    #: Where each test input came from: 0 the topic, 1 the ``--mix`` dataset; None: the topic.
    test_origin: np.ndarray | None = None


@dataclass
class _Recording:
    """Consecutive readings of one device under one label (only the uncut tail when the
    window is known)."""

    device_id: str
    label: str
    rows: list[np.ndarray] = field(default_factory=list)
    n: int = 0
    windows: int = 0

    def samples(self) -> np.ndarray:
        return np.concatenate(self.rows).astype(np.float32)


@dataclass
class _Capture:
    """Decodes, labels and cuts one pass over a topic (see the module's docstring)."""

    topic: str = ""
    feedback: FeedbackLabels | None = None
    target: Target | None = None
    window: int | None = None
    image_size: tuple[int, int] | None = None
    color: ImageColor | None = None
    #: Every input goes here; None: kept in :attr:`inputs` / :attr:`names`.
    sink: Sink | None = None
    #: A one-message input (image, sample) whose place this refuses is skipped undecoded.
    want: Callable[[Place], bool] | None = None
    #: Bytes of readings held while the window is unknown; past it, :class:`DatasetError`.
    max_held: int | None = None
    held: int = 0
    kind: str | None = None
    #: Image inputs' (height, width, channels); a window's channels.
    shape: tuple[int, ...] | None = None
    channels: int | None = None
    open: dict[str, _Recording] = field(default_factory=dict)
    #: Whole recordings, when the window is not known yet.
    recordings: list[_Recording] = field(default_factory=list)
    inputs: list[np.ndarray] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    read: int = 0
    emitted: int = 0
    by_feedback: int = 0
    by_header: int = 0
    unlabelled: int = 0
    undecodable: int = 0
    unknown_label: int = 0
    wrong_shape: int = 0
    short: int = 0
    first_error: str = ""

    def __post_init__(self) -> None:
        prep = self.target.preprocessing if self.target is not None else None
        if isinstance(prep, ImagePreprocessing):
            self.kind, self.shape = "image", (prep.height, prep.width, prep.channels)
        elif isinstance(prep, SequencePreprocessing):
            self.kind, self.window, self.channels = "sequence", prep.window, prep.channels

    def add(
        self, value: bytes | None, headers: Any, *, partition: int = 0, offset: int = 0
    ) -> None:
        self.read += 1
        hdrs = headers_dict(headers)
        is_sample = topics.H_SAMPLE_REASON in hdrs
        sensor = _is_sensor(value, hdrs)
        place = (partition, offset)
        if self.want is not None and (is_sample or not sensor) and not self.want(place):
            return
        try:
            source: Source = (self.topic, partition, offset)
            if is_sample:
                s = decode_sample(value, headers)
                source = (s.source_topic, s.source_partition, s.source_last_offset)
            label = self._label(source, hdrs)
            if label is None:
                return
            kind = "sequence" if sensor else "image"
            if self.kind is not None and self.kind != kind:
                self.wrong_shape += 1  # the first input that decoded set the topic's kind
                return
            if sensor:
                self._add_reading(value, hdrs, label, place, whole=is_sample)
            else:
                pixels = decode_image(value, hdrs).pixels
                self.kind = kind
                self._emit(self._fit_image(pixels), label, place)
        except DecodeError as exc:
            self.undecodable += 1
            self.first_error = self.first_error or f"{exc.reason}: {exc}"

    def finish(self) -> None:
        """End of the pass: recordings still open that never filled a window are short."""
        for rec in self.open.values():
            self._close(rec)
        self.open.clear()

    def _label(self, source: Source, hdrs: dict[str, str]) -> str | None:
        label = self.feedback.label(source) if self.feedback is not None else None
        if label is not None:
            self.by_feedback += 1
        elif hdrs.get(topics.H_LABEL):
            label = hdrs[topics.H_LABEL]
            self.by_header += 1
        else:
            self.unlabelled += 1
            return None
        if self.target is not None and label not in self.target.labels:
            self.unknown_label += 1
            return None
        return label

    def _fit_image(self, pixels: np.ndarray) -> np.ndarray:
        if self.shape is None:
            height, width = self.image_size or pixels.shape[:2]
            channels = {"L": 1, "RGB": 3}[self.color] if self.color else pixels.shape[2]
            self.shape = (int(height), int(width), int(channels))
        height, width, channels = self.shape
        return resize_image(pixels, height=height, width=width, channels=channels)

    def _add_reading(
        self, value: bytes | None, hdrs: dict[str, str], label: str, place: Place, *, whole: bool
    ) -> None:
        chunk = decode_sensor_record(value, hdrs)
        self.kind = "sequence"
        if self.channels is None:
            self.channels = chunk.channels
        if chunk.channels != self.channels:
            self.wrong_shape += 1
            return
        rec = None if whole else self.open.get(chunk.device_id)
        if rec is None or rec.label != label:
            if rec is not None:
                self._close(rec)
            rec = _Recording(chunk.device_id, label)
            if self.window is None:
                self.recordings.append(rec)
            if not whole:
                self.open[chunk.device_id] = rec
        rec.rows.append(chunk.samples)
        rec.n += chunk.n
        if self.window is None:
            self.held += chunk.samples.nbytes
            if self.max_held is not None and self.held > self.max_held:
                msg = (
                    f"the readings of {self.topic!r} do not fit in memory (--cache) and the "
                    "window is not known: pass --window N (or --like/--mix) to stream them"
                )
                raise DatasetError(msg)
            return
        while rec.n >= self.window:
            buf = rec.samples()
            self._emit(buf[: self.window], label, place)
            rest = buf[self.window :]
            rec.rows, rec.n, rec.windows = ([rest] if len(rest) else []), len(rest), rec.windows + 1
        if whole:
            self._close(rec)

    def _close(self, rec: _Recording) -> None:
        if self.window is not None and rec.windows == 0:
            self.short += 1

    def _emit(self, x: np.ndarray, label: str, place: Place) -> None:
        self.emitted += 1
        if self.sink is not None:
            self.sink(x, label, place)
        else:
            self.inputs.append(x)
            self.names.append(label)

    def summary(self) -> dict[str, Any]:
        """``report.json`` ``capture``: what was read, labelled, used and skipped."""
        return {
            "topic": self.topic,
            "messages": self.read,
            "inputs": self.emitted,
            "labelled_by": {"feedback": self.by_feedback, "header": self.by_header},
            "skipped": {
                "unlabelled": self.unlabelled,
                "undecodable": self.undecodable,
                "unknown_label": self.unknown_label,
                "wrong_shape": self.wrong_shape,
                "short_recordings": self.short,
            },
            "feedback": self.feedback.summary() if self.feedback is not None else None,
            "target": self.target.source if self.target is not None else None,
        }

    def check(self) -> None:
        """Raise :class:`DatasetError` when the pass found nothing to train on."""
        if self.read == 0:
            msg = (
                f"topic {self.topic!r} is empty; fill it with `edgeinfer replay ... --topic "
                f"{self.topic}`"
            )
            raise DatasetError(msg)
        if self.undecodable:
            logger.warning(
                'capture skipped undecodable messages topic="%s" count=%d first="%s"',
                self.topic, self.undecodable, self.first_error,
            )  # fmt: skip
        if self.short:
            logger.warning(
                "capture dropped recordings shorter than the window count=%d", self.short
            )
        if self.kind is None or not (self.emitted or self.recordings):
            raise DatasetError(self._nothing_usable())

    def _nothing_usable(self) -> str:
        topic = self.topic
        if self.unlabelled == self.read:
            where = (
                f"neither a {topics.H_LABEL!r} header nor a label on {self.feedback.topic!r}"
                if self.feedback is not None
                else f"a {topics.H_LABEL!r} header (or pass --labels-from FEEDBACK_TOPIC)"
            )
            return (
                f"none of the {self.read} messages on {topic!r} has {where}; training needs "
                "the true label"
            )
        if self.short:
            return (
                f"no device on {topic!r} sent {self.window} readings (the window) under one "
                "label; lower --window"
            )
        if self.unknown_label or self.wrong_shape:
            fits = self.target.source if self.target else "the first input"
            return (
                f"no message on {topic!r} fits {fits}: "
                f"{self.unknown_label} have a label outside its labels, {self.wrong_shape} "
                f"another input shape ({self.unlabelled} unlabelled, {self.undecodable} "
                "undecodable)"
            )
        return f"no message on {topic!r} could be decoded (first error: {self.first_error})"


def _is_sensor(value: bytes | None, headers: dict[str, str]) -> bool:
    """A sensor reading: a sensor content type, or no content type and a JSON object."""
    ctype = content_type(headers)
    if ctype:
        return ctype in SENSOR_CONTENT_TYPES
    return value is not None and value[:1] == b"{"


def target_window(window: int | None, target: Target | None) -> int | None:
    """``--window``, checked against the target's window (which it defaults to)."""
    if window is not None and window < 1:
        msg = f"--window must be >= 1 readings, got {window}"
        raise DatasetError(msg)
    if target is not None and isinstance(target.preprocessing, SequencePreprocessing):
        if window is not None and window != target.preprocessing.window:
            msg = (
                f"--window {window} differs from the window {target.preprocessing.window} of "
                f"{target.source}; leave --window out"
            )
            raise DatasetError(msg)
        return target.preprocessing.window
    return window


def run_pass(
    cap: _Capture,
    *,
    settings: KafkaSettings,
    max_messages: int,
    timeout_s: float,
    snapshot: TopicSnapshot | None = None,
) -> TopicSnapshot:
    """One pass of ``cap`` over its topic (up to ``snapshot``'s ends when given)."""
    snap = snapshot if snapshot is not None else TopicSnapshot(cap.topic)
    for record in read_topic(
        cap.topic, settings=settings, max_messages=max_messages, timeout_s=timeout_s, snapshot=snap
    ):
        cap.add(record.value, record.headers, partition=record.partition, offset=record.offset)
    cap.finish()
    return snap


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
    feedback: FeedbackLabels | None = None,
    target: Target | None = None,
    image_size: tuple[int, int] | None = None,
    color: ImageColor | None = None,
) -> CapturedDataset:
    """Read ``topic`` to its end into memory and split it (stratified).

    ``feedback`` labels inputs by their place in Kafka; ``target`` fixes the geometry and
    the labels (see the module's docstring).
    """
    cap = _Capture(
        topic=topic, feedback=feedback, target=target, window=target_window(window, target),
        image_size=image_size, color=color,
    )  # fmt: skip
    run_pass(cap, settings=settings, max_messages=max_messages, timeout_s=timeout_s)
    return captured_dataset(cap, max_window=max_window, seed=seed, test_fraction=test_fraction)


def captured_dataset(
    cap: _Capture, *, max_window: int, seed: int, test_fraction: float
) -> CapturedDataset:
    """The inputs a pass kept, as a :class:`CapturedDataset` with a stratified test split."""
    cap.check()
    if cap.recordings:  # the window was not known: cut every recording now
        _cut(cap, max_window=max_window)
    x = np.stack(cap.inputs)
    x = x.astype(np.uint8) if cap.kind == "image" else x.astype(np.float32)
    labels = list(cap.target.labels) if cap.target is not None else sorted(set(cap.names))
    index = {name: i for i, name in enumerate(labels)}
    y = np.array([index[n] for n in cap.names], dtype=np.int64)
    x_tr, y_tr, x_te, y_te = stratified_split(x, y, test_fraction=test_fraction, seed=seed)
    summary = cap.summary()
    logger.info(
        'captured topic="%s" messages=%d inputs=%d shape=%s classes=%d labelled_by=%s skipped=%s',
        cap.topic, cap.read, len(x), tuple(x.shape[1:]), len(labels),
        summary["labelled_by"], summary["skipped"],
    )  # fmt: skip
    return CapturedDataset(
        name=cap.topic,
        kind="image" if cap.kind == "image" else "sequence",
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        labels=labels,
        capture=summary,
    )


def _cut(cap: _Capture, *, max_window: int) -> None:
    """Cut kept recordings into windows of the shortest one's length (up to ``max_window``)."""
    series = [(rec.label, rec.samples()) for rec in cap.recordings]
    length = min(min(len(s) for _, s in series), max_window)
    for label, s in series:
        for start in range(0, len(s) - length + 1, length):
            cap._emit(s[start : start + length], label, (0, 0))
    cap.recordings.clear()
