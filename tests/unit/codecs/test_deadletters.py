"""Dead-letter codecs: round trips, and failures with their reason and message."""

from __future__ import annotations

import pytest

from stream import topics
from stream.codecs import MAX_ERROR_MESSAGE_CHARS, dead_letter_headers, decode_dead_letter
from stream.exceptions import DecodeError
from stream.schemas import DeadLetter
from tests.unit.codecs.helpers import assert_meaningful


def _headers(original: object, **fields: object) -> list[tuple[str, bytes]]:
    """``dead_letter_headers(original, ...)`` with short defaults for every field."""
    defaults: dict[str, object] = {
        "error_type": "not_json",
        "error_message": "m",
        "topic": "t",
        "partition": 0,
        "offset": 0,
        "agent_id": "a",
    }
    return dead_letter_headers(original, **{**defaults, **fields})  # type: ignore[arg-type]


def test_dead_letter_round_trip() -> None:
    original = [
        ("content-type", b"image/png"),
        ("device-id", b"cam-1"),
        ("trace", b"\xff\xfe"),
        (topics.H_ERROR_TYPE, b"stale"),  # from an earlier dead-lettering: replaced
    ]
    headers = _headers(
        original,
        error_type="corrupt_image",
        error_message="the bytes are not a valid PNG image",
        topic="images",
        partition=3,
        offset=1234,
        agent_id="agent-a",
    )
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers)
    assert [k for k, _ in headers].count(topics.H_ERROR_TYPE) == 1
    assert headers[:3] == original[:3]
    dl = decode_dead_letter(b"\x89PNG junk", headers)
    assert dl == DeadLetter(
        value=b"\x89PNG junk",
        headers={"content-type": "image/png", "device-id": "cam-1", "trace": "\ufffd\ufffd"},
        error_type="corrupt_image",
        error_message="the bytes are not a valid PNG image",
        source_topic="images",
        source_partition=3,
        source_offset=1234,
        agent_id="agent-a",
    )


def test_dead_letter_of_a_tombstone_with_no_headers() -> None:
    long = "x" * 5000
    headers = _headers(None, error_type="missing_field", error_message=long, topic="sensors")
    dl = decode_dead_letter(None, headers)
    assert dl.value is None and dl.headers == {}
    assert len(dl.error_message) == MAX_ERROR_MESSAGE_CHARS
    assert dl.error_message.endswith("...")


def test_dead_letter_headers_accept_confluent_style_none_values() -> None:
    headers = _headers([("empty", None), ("text", "v")])
    assert headers[:2] == [("empty", b""), ("text", b"v")]


def _dl_headers(**changes: object) -> list[tuple[str, bytes]]:
    base = dict(_headers(None))
    for key, value in changes.items():
        if value is ...:
            base.pop(key)
        else:
            base[key] = value  # type: ignore[assignment]
    return list(base.items())


DEAD_LETTER_FAILURES = [
    pytest.param(None, "missing_field", "error-type", id="no-headers"),
    pytest.param(_dl_headers(**{"error-type": ...}), "missing_field", "error-type", id="type"),
    pytest.param(_dl_headers(**{"agent-id": ...}), "missing_field", "agent-id", id="agent"),
    pytest.param(
        _dl_headers(**{"source-offset": ...}), "missing_field", "source-offset", id="offset"
    ),
    pytest.param(
        _dl_headers(**{"source-partition": b"one"}), "bad_header", "source-partition", id="p"
    ),
    pytest.param(
        _dl_headers(**{"source-offset": b"9" * 40}), "bad_header", "source-offset", id="huge"
    ),
]


@pytest.mark.parametrize(("headers", "reason", "fragment"), DEAD_LETTER_FAILURES)
def test_decode_dead_letter_failures(
    headers: list[tuple[str, bytes]] | None, reason: str, fragment: str
) -> None:
    with pytest.raises(DecodeError) as info:
        decode_dead_letter(b"v", headers)
    assert info.value.reason == reason, str(info.value)
    assert_meaningful(info.value, fragment)
