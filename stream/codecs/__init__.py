"""Codecs of wire contract v1: bytes <-> :mod:`stream.schemas` (docs/wire-format.md).

Encoders take trusted values from our own code and raise ``ValueError``/``TypeError`` on a
programming mistake. Decoders take untrusted bytes from the network and raise only
:class:`~stream.exceptions.DecodeError`, whose ``reason`` is one of
``DecodeError.REASONS`` and whose message says what was wrong and how to fix it.

One module per message kind: :mod:`~stream.codecs.sensors`, :mod:`~stream.codecs.images`,
:mod:`~stream.codecs.results`, :mod:`~stream.codecs.deadletters`,
:mod:`~stream.codecs.samples`, :mod:`~stream.codecs.feedback`; Kafka headers in
:mod:`~stream.codecs.headers`; the JSON field validators they share in
:mod:`~stream.codecs.fields`, the JSON writer of results in :mod:`~stream.codecs.jsonout`.
The content-type strings are :mod:`stream.content_types`.
"""

from __future__ import annotations

from stream.codecs.deadletters import (
    DEAD_LETTER_HEADERS,
    MAX_ERROR_MESSAGE_CHARS,
    dead_letter_headers,
    decode_dead_letter,
)
from stream.codecs.feedback import (
    MAX_FEEDBACK_BYTES,
    MAX_LABEL_CHARS,
    decode_feedback,
    encode_feedback,
    feedback_headers,
)
from stream.codecs.fields import DEFAULT_MAX_MESSAGE_BYTES, MAX_DEVICE_ID_CHARS
from stream.codecs.headers import (
    Headers,
    content_type,
    headers_dict,
    image_headers,
    sensor_headers,
)
from stream.codecs.images import (
    DEFAULT_MAX_PIXELS,
    JPEG_MAGIC,
    NPY_MAGIC,
    PNG_MAGIC,
    decode_image,
    encode_jpeg,
    encode_npy,
    encode_png,
    sniff_content_type,
)
from stream.codecs.results import decode_result, encode_result
from stream.codecs.samples import SAMPLE_HEADERS, decode_sample, sample_headers
from stream.codecs.sensors import (
    DEFAULT_MAX_CHANNELS,
    DEFAULT_MAX_SAMPLES,
    decode_sensor,
    decode_sensor_record,
    encode_chunk,
    encode_reading,
)
from stream.content_types import CONTENT_TYPES

__all__ = [
    "CONTENT_TYPES",
    "DEAD_LETTER_HEADERS",
    "DEFAULT_MAX_CHANNELS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SAMPLES",
    "JPEG_MAGIC",
    "MAX_DEVICE_ID_CHARS",
    "MAX_ERROR_MESSAGE_CHARS",
    "MAX_FEEDBACK_BYTES",
    "MAX_LABEL_CHARS",
    "NPY_MAGIC",
    "PNG_MAGIC",
    "SAMPLE_HEADERS",
    "Headers",
    "content_type",
    "dead_letter_headers",
    "decode_dead_letter",
    "decode_feedback",
    "decode_image",
    "decode_result",
    "decode_sample",
    "decode_sensor",
    "decode_sensor_record",
    "encode_chunk",
    "encode_feedback",
    "encode_jpeg",
    "encode_npy",
    "encode_png",
    "encode_reading",
    "encode_result",
    "feedback_headers",
    "headers_dict",
    "image_headers",
    "sample_headers",
    "sensor_headers",
    "sniff_content_type",
]
