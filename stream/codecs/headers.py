"""Kafka headers: read them tolerantly, and write those of sensor and image messages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from stream import topics
from stream.codecs.fields import MAX_TS, fail, short
from stream.content_types import IMAGE_CONTENT_TYPES, JSON

Headers = list[tuple[str, bytes]]


def headers_dict(headers: Headers | Mapping[Any, Any] | None) -> dict[str, str]:
    """Kafka headers (list of pairs or mapping) as ``{name: text}``; never raises.

    Undecodable bytes become replacement characters, ``None`` values ``""``; when a name
    repeats, the last value wins. Malformed entries are skipped.
    """
    out: dict[str, str] = {}
    if not headers:
        return out
    try:
        items: Iterable[Any] = headers.items() if isinstance(headers, Mapping) else headers
        for item in items:
            try:
                name, value = item
            except (TypeError, ValueError):
                continue
            out[header_text(name)] = header_text(value)
    except TypeError:
        return out
    return out


def header_text(value: object) -> str:
    """A header name or value as text; never raises."""
    # The common cases first (header values are bytes, names str): ~3x faster.
    if type(value) is bytes:
        return value.decode("utf-8", errors="replace")
    if type(value) is str:
        return value
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def content_type(headers: Iterable[tuple[str, Any]] | Mapping[str, Any] | None) -> str:
    """The first ``content-type`` header (name in any case), lower case without parameters.

    ``""`` when there is none. Header values are bytes (or text, in a mapping).
    """
    items = headers.items() if isinstance(headers, Mapping) else headers or ()
    for name, value in items:
        if name.lower() == topics.H_CONTENT_TYPE:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            return text.split(";", 1)[0].strip().lower()
    return ""


def lower_keys(headers: dict[str, str]) -> dict[str, str]:
    """Header names stripped and lower-cased."""
    return {k.strip().lower(): v for k, v in headers.items()}


def header_bytes(value: object) -> bytes:
    """A header value written as UTF-8 text."""
    return str(value).encode("utf-8")


def sensor_headers(device_id: str, ts: int, label: str | None = None) -> Headers:
    """Headers of a sensor message: content type, device id, ts and (optional) true label."""
    out: Headers = [
        (topics.H_CONTENT_TYPE, JSON.encode()),
        (topics.H_DEVICE_ID, header_bytes(device_id)),
        (topics.H_TS, header_bytes(int(ts))),
    ]
    if label is not None:
        out.append((topics.H_LABEL, header_bytes(label)))
    return out


def image_headers(
    content_type: str, device_id: str | None, ts: int | None, label: str | None = None
) -> Headers:
    """Headers of an image message; ``device-id``/``ts``/``label`` only when given."""
    if content_type not in IMAGE_CONTENT_TYPES:
        msg = f"content_type must be one of {', '.join(IMAGE_CONTENT_TYPES)}, got {content_type!r}"
        raise ValueError(msg)
    out: Headers = [(topics.H_CONTENT_TYPE, content_type.encode())]
    if device_id is not None:
        out.append((topics.H_DEVICE_ID, header_bytes(device_id)))
    if ts is not None:
        out.append((topics.H_TS, header_bytes(int(ts))))
    if label is not None:
        out.append((topics.H_LABEL, header_bytes(label)))
    return out


def ts_header(text: str | None) -> int | None:
    """The ``ts`` header as epoch milliseconds, None when absent or empty."""
    if text is None or text == "":
        return None
    t = text.strip()
    if not (t.isascii() and t.isdigit() and len(t) <= 19) or int(t) > MAX_TS:
        fail(
            "bad_header",
            f"ts header {short(text, 40)!r} is not epoch milliseconds; send a decimal "
            "integer such as 1718000000000",
        )
    return int(t)
