"""Message schemas of wire contract v1 (docs/wire-format.md).

These are the decoded, validated forms of what travels on the topics. The byte-level
encoding lives in :mod:`stream.codecs`, the ``content-type`` values in
:mod:`stream.content_types`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.content_types import ImageContentType


@dataclass(frozen=True, kw_only=True)
class SensorChunk:
    """One or more consecutive readings of one device.

    ``samples`` is float32 shaped (n, channels); a single reading decodes to n=1.
    ``ts`` is the epoch milliseconds of the first sample.
    """

    device_id: str
    ts: int
    samples: np.ndarray

    @property
    def n(self) -> int:
        return int(self.samples.shape[0])

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])


@dataclass(frozen=True, kw_only=True)
class ImageFrame:
    """A decoded image: ``pixels`` is uint8 shaped (H, W, C) with C 1 (gray) or 3 (RGB)."""

    device_id: str | None
    ts: int | None
    content_type: ImageContentType
    pixels: np.ndarray


@dataclass(frozen=True, kw_only=True)
class InferenceResult:
    """What an agent produces to ``inference.results`` for one input (or one window)."""

    device_id: str
    model: str
    version: str
    label: str
    score: float
    scores: dict[str, float]
    #: ``{"topic", "partition", "offset"}``; for windows also ``"first_offset"``,
    #: ``"last_offset"``.
    source: dict[str, Any]
    #: Milliseconds; keys ``"queue"``, ``"infer"``, ``"e2e"``.
    latency_ms: dict[str, float]
    #: The input's device timestamp (epoch ms), when it had one.
    ts: int | None
    #: Epoch ms when the agent produced the result.
    produced_at: int
    agent_id: str
    #: The true label when the input carried a ``label`` header (replays of datasets).
    true_label: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    """A message the agent could not process, as read back from ``inference.deadletter``."""

    value: bytes | None
    #: The original message's headers (without the dead-letter headers).
    headers: dict[str, str]
    error_type: str
    error_message: str
    source_topic: str
    source_partition: int
    source_offset: int
    agent_id: str


@dataclass(frozen=True, kw_only=True)
class Sample:
    """An input an agent captured to ``samples``, as read back (docs/wire-format.md)."""

    #: The input exactly as received (images); a sensor window as a chunk of its readings.
    value: bytes | None
    #: The input's own headers (without the sample headers); ``label`` is the true label
    #: when the device or replayer sent one.
    headers: dict[str, str]
    #: ``low_confidence``, ``drift`` or ``random``.
    reason: str
    model: str
    version: str
    #: The predicted label, its score and every class's score.
    label: str
    score: float
    scores: dict[str, float]
    #: The input's own drift score against the model's reference, when it has one.
    drift: float | None
    source_topic: str
    source_partition: int
    source_offset: int
    #: The last reading's offset (a sensor window); ``source_offset`` for an image.
    source_last_offset: int
    agent_id: str


@dataclass(frozen=True, kw_only=True)
class Feedback:
    """A true label for one input, as read from ``feedback`` (docs/wire-format.md).

    ``(source_topic, source_partition, source_offset)`` is the input's place in Kafka: the
    ``source`` of its result (for a sensor window, the offset of its last reading).
    """

    source_topic: str
    source_partition: int
    source_offset: int
    label: str
    #: When the label was given (epoch ms), when the labeller said.
    ts: int | None = None
    #: Who labelled it (a person, a tool, ``replay``), when the labeller said.
    by: str | None = None

    @property
    def source(self) -> tuple[str, int, int]:
        """The join key: ``(topic, partition, offset)``."""
        return (self.source_topic, self.source_partition, self.source_offset)
