"""orjson's fast path of the sensor decoder against the reference rules (the standard
library's parser): for any bytes, the same chunk (bit for bit) or the same error reason and
message. The reference is the decoder with orjson switched off, as on an install without it.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from typing import Any
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from stream.codecs import decode_sensor, encode_chunk, fields
from stream.exceptions import DecodeError
from tests.unit.codecs.test_fuzz import FUZZ, JSON_VALUES, SENSOR_LIKE, mutated

pytest.importorskip("orjson")


def reference_rules() -> AbstractContextManager[None]:
    return patch.object(fields, "_orjson", None)


def outcome(raw: bytes, **limits: Any) -> tuple[Any, ...]:
    try:
        chunk = decode_sensor(raw, **limits)
    except DecodeError as err:
        return ("error", err.reason, err.message)
    s = chunk.samples
    return ("ok", chunk.device_id, chunk.ts, s.dtype.str, s.shape, s.tobytes())


def assert_same(raw: bytes, **limits: Any) -> tuple[Any, ...]:
    assert fields._orjson is not None
    fast = outcome(raw, **limits)
    with reference_rules():
        reference = outcome(raw, **limits)
    assert fast == reference, raw[:300]
    return fast


# JSON number literals as text: long mantissas, exponents, ints beyond 64 bits.
NUMBER_TEXT = st.one_of(
    st.from_regex(r"-?(0|[1-9][0-9]{0,45})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-0", "-0.0", "1E+2", "true"]),
)
# String literals: any text (lone surrogates escaped by json.dumps), raw invalid UTF-8.
STRING_TEXT = st.one_of(
    st.text(max_size=12).map(json.dumps),
    st.sampled_from(['"\\ud800"', '"\\udc00x"', '"\\ud83d\\ude00"', '"\\u0000"', '""']),
    # Raw bytes, invalid UTF-8 included (restored by the surrogateescape round trip).
    st.binary(min_size=1, max_size=6).map(
        lambda b: '"' + b.decode("utf-8", "surrogateescape") + '"'
    ),
)
ROW_TEXT = st.lists(NUMBER_TEXT, min_size=1, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]")
FIELD_TEXT = {
    "device_id": st.one_of(STRING_TEXT, NUMBER_TEXT),
    "ts": st.one_of(
        NUMBER_TEXT,
        st.sampled_from([str(2**63 - 1), str(2**63), str(2**64), str(2**64 - 1), str(-(2**63))]),
    ),
    "values": ROW_TEXT,
    "samples": st.lists(ROW_TEXT, min_size=1, max_size=4).map(lambda r: "[" + ",".join(r) + "]"),
    "extra": st.one_of(NUMBER_TEXT, STRING_TEXT, JSON_VALUES.map(json.dumps)),
}


@st.composite
def object_text(draw: st.DrawFn) -> bytes:
    """A sensor-like object written as text: fields in any order, repeated keys included."""
    keys = draw(
        st.lists(st.sampled_from(sorted(FIELD_TEXT)), min_size=0, max_size=7).filter(
            lambda ks: "device_id" in ks or len(ks) < 3
        )
    )
    parts = [f'"{k}":{draw(FIELD_TEXT[k])}' for k in keys]
    return ("{" + ",".join(parts) + "}").encode("utf-8", "surrogateescape")


@FUZZ
@given(object_text())
@example(b'{"device_id":"d","ts":18446744073709551616,"values":[1]}')
@example(b'{"device_id":"d","ts":-9223372036854775809,"values":[1]}')
@example(b'{"device_id":"d","ts":1,"values":[100000000000000000000000000000]}')
@example(b'{"device_id":"d","ts":1,"values":[1000000000000000000000000000000000000000]}')
@example(b'{"device_id":"\\ud800","ts":1,"values":[1]}')
@example(b'{"device_id":"d","ts":1,"ts":2,"values":[1],"values":[2,3]}')
@example(b'{"device_id":"d","ts":1,"values":[1],"values":[true]}')
@example(b'\xef\xbb\xbf{"device_id":"d","ts":1,"values":[1]}')
@example(b'{"device_id":"d\xff","ts":1,"values":[1]}')
@example(b'{"device_id":"d\xed\xa0\x80","ts":1,"values":[1]}')
def test_object_text_decodes_alike(raw: bytes) -> None:
    assert_same(raw)


@FUZZ
@given(st.one_of(SENSOR_LIKE, JSON_VALUES))
def test_generated_values_decode_alike(value: Any) -> None:
    assert_same(json.dumps(value).encode())


@FUZZ
@given(mutated(["reading", "chunk"]))
def test_mutated_messages_decode_alike(case: tuple[str, bytes]) -> None:
    assert_same(case[1])


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_decode_alike(raw: bytes) -> None:
    assert_same(raw)


@FUZZ
@given(
    st.integers(min_value=1, max_value=20),
    st.integers(min_value=1, max_value=6),
    st.sampled_from([{}, {"channels": 3}, {"max_samples": 5}, {"max_channels": 2}]),
)
def test_valid_chunks_decode_alike_and_exactly(rows: int, width: int, limits: Any) -> None:
    samples = np.random.default_rng(rows * 7 + width).standard_normal((rows, width))
    raw = encode_chunk("dev", 1_718_000_000_000, samples.astype(np.float32))
    got = assert_same(raw, **limits)
    if got[0] == "ok":
        assert got[5] == samples.astype(np.float32).tobytes()


def _nested(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@pytest.mark.parametrize("depth", [0, 1, 31, 32, 33, 200, 900, 1000, 1023, 1024, 1025, 5000])
@pytest.mark.parametrize("field", ["extra", "values"])
def test_nesting_decodes_alike(depth: int, field: str) -> None:
    """orjson accepts 1,024 levels, the reference runs out of recursion near 950: nested
    fields the decoder does not check send the message to the reference parser."""
    raw = f'{{"device_id":"d","ts":1,"values":[1],"{field}":{_nested(depth)}}}'
    raw = raw.replace('"values":[1],"values"', '"values"')
    got = assert_same(raw.encode())
    if field == "extra" and depth <= 200:
        assert got[0] == "ok"
    if depth >= 1025:
        assert got[:2] == ("error", "not_json")


def test_wide_integers_follow_the_contract() -> None:
    """An integer beyond 64 bits: orjson reads a float, the contract an int; the outcome
    is the reference's either way (ts refused with its value, readings rounded)."""
    ts = assert_same(b'{"device_id":"d","ts":18446744073709551616,"values":[1]}')
    assert ts[:2] == ("error", "wrong_type")
    assert "[0, 2**63)" in ts[2] and "18446744073709551616" in ts[2]
    value = assert_same(b'{"device_id":"d","ts":1,"values":[100000000000000000000000000001]}')
    assert value[0] == "ok"
    assert np.frombuffer(value[5], np.float32)[0] == np.float32(1e29)


def test_valid_chunks_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Valid messages, extra fields included, never reach the reference parser."""

    def refuse(data: bytes, what: str) -> None:
        raise AssertionError("the reference parser ran on a valid message")

    monkeypatch.setattr("stream.codecs.sensors.load_json_object", refuse)
    raw = encode_chunk("dev", 5, np.ones((100, 6), np.float32))
    assert decode_sensor(raw, channels=6).n == 100
    with_extra = b'{"device_id":"d","ts":1,"values":[1.5],"seq":7,"meta":{"unit":["g"]}}'
    assert decode_sensor(with_extra).samples.tolist() == [[1.5]]


def test_nested_within() -> None:
    assert fields.nested_within(1, 0)
    assert fields.nested_within([], 1) and not fields.nested_within([], 0)
    assert fields.nested_within([[1], {"a": 2}], 2)
    assert not fields.nested_within([[[]]], 2)
    assert not fields.nested_within({"a": {"b": {}}}, 2)
    assert fields.nested_within({"a": {"b": {}}}, 3)


def test_fast_json_object_refuses_what_is_not_an_object() -> None:
    assert fields.fast_json_object(b'{"a":1}') == {"a": 1}
    for raw in (b"[1]", b"1", b"{", b"[NaN]", b'{"a":NaN}', b"\xff", b'{"a":1e400}'):
        assert fields.fast_json_object(raw) is None, raw
