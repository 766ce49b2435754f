"""``--labels-from TOPIC``: the true labels a ``feedback`` topic gives captured inputs.

Every feedback message (docs/wire-format.md, "Feedback") names an input by its place in
Kafka, ``(topic, partition, offset)``, and gives its label. The whole topic is read once
into a map from that place to the label (a few dozen bytes per label: a feedback topic is
small next to the inputs it labels). When several messages label the same input the last
one read wins (a labeller's correction), and the disagreements are counted. A message that
does not decode is counted and skipped, never fatal: labellers are outside the trust
boundary too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from stream.codecs import decode_feedback
from stream.exceptions import DecodeError
from stream.settings import KafkaSettings
from trainer.topic_read import read_topic

logger = logging.getLogger(__name__)

#: An input's place in Kafka: (topic, partition, offset).
Source = tuple[str, int, int]


@dataclass
class FeedbackLabels:
    """Labels by input, and what reading them found."""

    topic: str
    labels: dict[Source, str] = field(default_factory=dict)
    messages: int = 0
    undecodable: int = 0
    relabelled: int = 0
    first_error: str = ""
    #: Inputs whose label was used (filled by the capture).
    used: set[Source] = field(default_factory=set)

    def add(self, value: bytes | None, headers: Any) -> None:
        self.messages += 1
        try:
            fb = decode_feedback(value, headers)
        except DecodeError as exc:
            self.undecodable += 1
            self.first_error = self.first_error or f"{exc.reason}: {exc}"
            return
        old = self.labels.get(fb.source)
        if old is not None and old != fb.label:
            self.relabelled += 1
        self.labels[fb.source] = fb.label

    def label(self, source: Source) -> str | None:
        found = self.labels.get(source)
        if found is not None:
            self.used.add(source)
        return found

    def summary(self) -> dict[str, Any]:
        """The ``feedback`` part of ``report.json`` ``capture``."""
        return {
            "topic": self.topic,
            "messages": self.messages,
            "inputs_labelled": len(self.labels),
            "matched": len(self.used),
            "unmatched": len(self.labels) - len(self.used),
            "undecodable": self.undecodable,
            "relabelled": self.relabelled,
        }


def read_feedback(
    topic: str, *, settings: KafkaSettings, max_messages: int, timeout_s: float
) -> FeedbackLabels:
    """Read ``topic`` to its end into :class:`FeedbackLabels`."""
    found = FeedbackLabels(topic)
    for record in read_topic(
        topic, settings=settings, max_messages=max_messages, timeout_s=timeout_s
    ):
        found.add(record.value, record.headers)
    if found.undecodable:
        logger.warning(
            'feedback skipped undecodable messages topic="%s" count=%d first="%s"',
            topic, found.undecodable, found.first_error,
        )  # fmt: skip
    logger.info(
        'feedback topic="%s" messages=%d inputs=%d relabelled=%d',
        topic, found.messages, len(found.labels), found.relabelled,
    )  # fmt: skip
    return found
