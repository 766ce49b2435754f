"""Dead letters: the original value and headers plus the error and source headers."""

from __future__ import annotations

from collections.abc import Mapping

from stream import topics
from stream.codecs.fields import fail, short
from stream.codecs.headers import Headers, header_bytes, header_text, headers_dict
from stream.schemas import DeadLetter

#: Dead-letter ``error-message`` headers are cut to this many characters.
MAX_ERROR_MESSAGE_CHARS = 1000
#: The headers a dead letter adds (a stale copy in the original headers is dropped).
DEAD_LETTER_HEADERS = (
    topics.H_ERROR_TYPE,
    topics.H_ERROR_MESSAGE,
    topics.H_SOURCE_TOPIC,
    topics.H_SOURCE_PARTITION,
    topics.H_SOURCE_OFFSET,
    topics.H_AGENT_ID,
)


def dead_letter_headers(
    original: Headers | None,
    *,
    error_type: str,
    error_message: str,
    topic: str,
    partition: int,
    offset: int,
    agent_id: str,
) -> Headers:
    """The original headers (minus stale dead-letter headers) plus the dead-letter ones."""
    if len(error_message) > MAX_ERROR_MESSAGE_CHARS:
        error_message = error_message[: MAX_ERROR_MESSAGE_CHARS - 3] + "..."
    out: Headers = []
    for name, raw in original or []:
        if name in DEAD_LETTER_HEADERS:
            continue
        out.append((header_text(name), _raw_header(raw)))
    out += [
        (topics.H_ERROR_TYPE, header_bytes(error_type)),
        (topics.H_ERROR_MESSAGE, header_bytes(error_message)),
        (topics.H_SOURCE_TOPIC, header_bytes(topic)),
        (topics.H_SOURCE_PARTITION, header_bytes(int(partition))),
        (topics.H_SOURCE_OFFSET, header_bytes(int(offset))),
        (topics.H_AGENT_ID, header_bytes(agent_id)),
    ]
    return out


def _raw_header(raw: object) -> bytes:
    if raw is None:
        return b""
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw)
    return str(raw).encode("utf-8")


def _int_header(hdrs: Mapping[str, str], name: str, *, signed: bool = False) -> int:
    if name not in hdrs:
        fail("missing_field", f"the dead letter lacks the header {name!r}")
    text = hdrs[name].strip()
    digits = text[1:] if signed and text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 19):
        fail(
            "bad_header",
            f"header {name!r} of the dead letter must be a decimal integer, got "
            f"{short(hdrs[name], 40)!r}",
        )
    return int(text)


def decode_dead_letter(value: bytes | None, headers: Headers | None) -> DeadLetter:
    """Read a dead letter back: its original value and headers plus the error details."""
    if value is not None and not isinstance(value, bytes | bytearray | memoryview):
        fail("wrong_type", f"the dead letter value must be bytes, got {type(value).__name__}")
    hdrs = headers_dict(headers)
    for name in (topics.H_ERROR_TYPE, topics.H_SOURCE_TOPIC, topics.H_AGENT_ID):
        if name not in hdrs:
            fail(
                "missing_field",
                f"the dead letter lacks the header {name!r}; is this message from the "
                "dead-letter topic?",
            )
    return DeadLetter(
        value=None if value is None else bytes(value),
        headers={k: v for k, v in hdrs.items() if k not in DEAD_LETTER_HEADERS},
        error_type=hdrs[topics.H_ERROR_TYPE],
        error_message=hdrs.get(topics.H_ERROR_MESSAGE, ""),
        source_topic=hdrs[topics.H_SOURCE_TOPIC],
        source_partition=_int_header(hdrs, topics.H_SOURCE_PARTITION, signed=True),
        source_offset=_int_header(hdrs, topics.H_SOURCE_OFFSET, signed=True),
        agent_id=hdrs[topics.H_AGENT_ID],
    )
