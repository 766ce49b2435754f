"""Feedback: a true label for one input, keyed to the input's topic/partition/offset.

Labellers (people, tools, ``edgeinfer replay --feedback``) write it to ``feedback``;
``edgeinfer monitor`` joins it with results into online accuracy and the trainer reads it
as the labels of captured samples (docs/wire-format.md, "Feedback").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from stream import content_types
from stream.codecs.fields import (
    as_bytes,
    bounded_str_field,
    check_size,
    dict_field,
    fail,
    int_field,
    load_json_object,
    short,
)
from stream.codecs.headers import Headers, content_type
from stream.exceptions import DecodeError
from stream.schemas import Feedback

#: Largest feedback message accepted (bytes): a label, a source and two short fields.
MAX_FEEDBACK_BYTES = 4096
#: Longest label, ``by`` and source topic accepted (characters); Kafka's own limit on a
#: topic name is 249.
MAX_LABEL_CHARS = 256
MAX_BY_CHARS = 256
MAX_TOPIC_CHARS = 249
#: A Kafka partition number is a signed 32-bit integer.
MAX_PARTITION = 2**31 - 1

_WHAT = "feedback"
_ACCEPTED_TYPES = (content_types.NO_HEADER, content_types.JSON, content_types.TEXT_JSON)


def feedback_headers() -> Headers:
    """The headers of a feedback message."""
    return [("content-type", content_types.JSON.encode())]


def encode_feedback(feedback: Feedback) -> bytes:
    """Compact JSON of ``feedback``; ``ValueError`` when it breaks a limit of the contract
    (the bytes are checked by :func:`decode_feedback`, so whatever this writes reads back)."""
    obj: dict[str, Any] = {
        "source": {
            "topic": feedback.source_topic,
            "partition": feedback.source_partition,
            "offset": feedback.source_offset,
        },
        "label": feedback.label,
    }
    if feedback.ts is not None:
        obj["ts"] = feedback.ts
    if feedback.by is not None:
        obj["by"] = feedback.by
    try:
        data = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
        decode_feedback(data)
    except (TypeError, ValueError, DecodeError) as exc:
        msg = f"feedback for {feedback.source} is not valid: {exc}"
        raise ValueError(msg) from exc
    return data


def _text(obj: Mapping[str, Any], key: str, limit: int, *, optional: bool = False) -> Any:
    return bounded_str_field(obj, key, _WHAT, limit=limit, optional=optional)


def decode_feedback(
    value: bytes | None,
    headers: Headers | Mapping[str, Any] | None = None,
    *,
    max_bytes: int = MAX_FEEDBACK_BYTES,
) -> Feedback:
    """Decode a feedback message (raises only ``DecodeError``; unknown fields are ignored).

    ``headers``, when given, may carry no ``content-type`` or a JSON one.
    """
    if headers is not None:
        try:
            kind = content_type(headers)
        except (TypeError, ValueError, AttributeError):
            kind = "?"
        if kind not in _ACCEPTED_TYPES:
            fail(
                "unknown_content_type",
                f"the feedback message declares content-type {short(kind, 60)!r}; send "
                f"{content_types.JSON!r} JSON",
            )
    data = as_bytes(value, _WHAT)
    check_size(data, max_bytes, _WHAT)
    obj = load_json_object(data, _WHAT)
    source = dict_field(obj, "source", _WHAT)
    topic = _text(source, "topic", MAX_TOPIC_CHARS)
    partition = int_field(source, "partition", "feedback source")
    offset = int_field(source, "offset", "feedback source")
    assert partition is not None and offset is not None  # noqa: S101 (not optional)
    if partition > MAX_PARTITION:
        fail(
            "wrong_type",
            f"field 'partition' of the feedback source must be below 2**31, got {partition}",
        )
    return Feedback(
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        label=_text(obj, "label", MAX_LABEL_CHARS),
        ts=int_field(obj, "ts", _WHAT, optional=True),
        by=_text(obj, "by", MAX_BY_CHARS, optional=True),
    )
