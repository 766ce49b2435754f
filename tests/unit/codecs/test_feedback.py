"""The feedback codec: round trip, every field validated, and whatever the bytes, a
Feedback or a DecodeError (hypothesis)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.codecs import (
    MAX_FEEDBACK_BYTES,
    MAX_LABEL_CHARS,
    decode_feedback,
    encode_feedback,
    feedback_headers,
)
from stream.codecs.feedback import MAX_PARTITION, MAX_TOPIC_CHARS
from stream.exceptions import DecodeError
from stream.schemas import Feedback
from tests.unit.codecs.helpers import FUZZ, assert_meaningful

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
TEXT = st.text(min_size=1, max_size=MAX_LABEL_CHARS)
FEEDBACK = st.builds(
    Feedback,
    source_topic=st.text(min_size=1, max_size=MAX_TOPIC_CHARS),
    source_partition=st.integers(0, MAX_PARTITION),
    source_offset=st.integers(0, 2**63 - 1),
    label=TEXT,
    ts=st.none() | st.integers(0, 2**63 - 1),
    by=st.none() | TEXT,
)


def valid(**change: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "source": {"topic": "images", "partition": 2, "offset": 41},
        "label": "7",
        "ts": 1718000000123,
        "by": "replay",
    }
    doc.update(change)
    return doc


def dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def test_decodes_the_documented_example() -> None:
    fb = decode_feedback(dumps(valid()), feedback_headers())
    assert fb == Feedback(
        source_topic="images",
        source_partition=2,
        source_offset=41,
        label="7",
        ts=1718000000123,
        by="replay",
    )
    assert fb.source == ("images", 2, 41)


def test_optional_fields_and_unknown_ones() -> None:
    doc = valid(extra={"anything": [1, 2]})
    del doc["ts"], doc["by"]
    fb = decode_feedback(dumps(doc))
    assert (fb.ts, fb.by, fb.label) == (None, None, "7")
    assert decode_feedback(dumps(valid(ts=None, by=None))).by is None


@pytest.mark.parametrize(
    ("doc", "reason", "fragment"),
    [
        ({"label": "7"}, "missing_field", "'source'"),
        (valid(source=None), "wrong_type", "'source'"),
        (valid(source=[1]), "wrong_type", "'source'"),
        (valid(source={"partition": 0, "offset": 1}), "missing_field", "'topic'"),
        (valid(source={"topic": "", "partition": 0, "offset": 1}), "missing_field", "empty"),
        (
            valid(source={"topic": "t" * 250, "partition": 0, "offset": 1}),
            "too_large",
            "249",
        ),
        (valid(source={"topic": "t", "partition": -1, "offset": 1}), "wrong_type", "partition"),
        (valid(source={"topic": "t", "partition": 2**31, "offset": 1}), "wrong_type", "2**31"),
        (valid(source={"topic": "t", "partition": 0, "offset": "1"}), "wrong_type", "offset"),
        (valid(source={"topic": "t", "partition": True, "offset": 1}), "wrong_type", "partition"),
        (valid(label=7), "wrong_type", "'label'"),
        (valid(label=""), "missing_field", "'label'"),
        (valid(label="x" * (MAX_LABEL_CHARS + 1)), "too_large", "'label'"),
        (valid(ts=-5), "wrong_type", "'ts'"),
        (valid(ts=1.5), "wrong_type", "'ts'"),
        (valid(by=3), "wrong_type", "'by'"),
        (valid(by=""), "missing_field", "'by'"),
        ([valid()], "wrong_type", "object"),
    ],
)
def test_invalid_fields_are_refused_with_a_reason(doc: Any, reason: str, fragment: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_feedback(dumps(doc))
    assert info.value.reason == reason
    assert_meaningful(info.value, fragment)


def test_bounded_size_bad_bytes_and_content_type() -> None:
    big = dumps(valid(pad="x" * MAX_FEEDBACK_BYTES))
    with pytest.raises(DecodeError) as info:
        decode_feedback(big)
    assert info.value.reason == "too_large"
    for value, reason in ((None, "missing_field"), (b"\xff\xfe", "not_json"), (b"{", "not_json")):
        with pytest.raises(DecodeError) as info:
            decode_feedback(value)
        assert info.value.reason == reason
    with pytest.raises(DecodeError) as info:
        decode_feedback(dumps(valid()), [("content-type", b"image/png")])
    assert info.value.reason == "unknown_content_type"
    assert decode_feedback(dumps(valid()), [("Content-Type", b"application/json; x=1")]).label


def test_encode_refuses_what_the_decoder_would() -> None:
    fb = decode_feedback(dumps(valid()))
    with pytest.raises(ValueError, match="label"):
        encode_feedback(Feedback(**{**fb.__dict__, "label": ""}))
    with pytest.raises(ValueError, match="partition"):
        encode_feedback(Feedback(**{**fb.__dict__, "source_partition": -1}))


@FUZZ
@given(FEEDBACK)
def test_round_trip(fb: Feedback) -> None:
    data = encode_feedback(fb)
    assert len(data) <= MAX_FEEDBACK_BYTES
    assert decode_feedback(data, feedback_headers()) == fb


def _decoded_or_decode_error(value: Any, headers: Any = None) -> None:
    try:
        fb = decode_feedback(value, headers)
    except DecodeError as err:
        assert err.reason in DecodeError.REASONS
        assert str(err)
        return
    assert isinstance(fb, Feedback)
    assert fb.label and len(fb.label) <= MAX_LABEL_CHARS
    assert 0 <= fb.source_partition <= MAX_PARTITION and fb.source_offset >= 0


@FUZZ
@given(st.binary(max_size=MAX_FEEDBACK_BYTES + 64))
def test_arbitrary_bytes_decode_or_raise_decode_error(value: bytes) -> None:
    _decoded_or_decode_error(value)


@FUZZ
@given(
    JSON_VALUES
    | st.fixed_dictionaries(
        {
            "source": JSON_VALUES
            | st.fixed_dictionaries(
                {"topic": JSON_VALUES, "partition": JSON_VALUES, "offset": JSON_VALUES}
            ),
            "label": JSON_VALUES,
        },
        optional={"ts": JSON_VALUES, "by": JSON_VALUES},
    )
)
def test_arbitrary_json_decodes_or_raises_decode_error(doc: Any) -> None:
    _decoded_or_decode_error(json.dumps(doc).encode())


@FUZZ
@given(
    st.one_of(
        st.none(),
        st.lists(st.tuples(st.text(max_size=20), st.binary(max_size=20)), max_size=4),
        st.lists(JSON_VALUES, max_size=3),
        st.dictionaries(st.text(max_size=12), st.text(max_size=12) | st.binary(max_size=8)),
    )
)
def test_arbitrary_headers_decode_or_raise_decode_error(headers: Any) -> None:
    _decoded_or_decode_error(dumps(valid()), headers)
