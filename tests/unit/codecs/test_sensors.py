"""Sensor codecs: round trips, and failures with their reason and message."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import numpy as np
import pytest

from stream.codecs import (
    DEFAULT_MAX_CHANNELS,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_SAMPLES,
    decode_sensor,
    decode_sensor_record,
    encode_chunk,
    encode_reading,
)
from stream.exceptions import DecodeError
from stream.schemas import SensorChunk
from tests.unit.codecs.helpers import assert_meaningful

RNG = np.random.default_rng(7)


def sensor(**fields: object) -> bytes:
    base: dict[str, object] = {"device_id": "dev-1", "ts": 1_718_000_000_000}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def test_reading_round_trip() -> None:
    raw = encode_reading("dev-1", 1_718_000_000_000, [0.1, -2.5, 3e-5, 7])
    assert json.loads(raw) == {
        "device_id": "dev-1",
        "ts": 1_718_000_000_000,
        "values": [0.1, -2.5, 3e-5, 7.0],
    }
    chunk = decode_sensor(raw)
    assert isinstance(chunk, SensorChunk)
    assert (chunk.device_id, chunk.ts) == ("dev-1", 1_718_000_000_000)
    assert chunk.samples.dtype == np.float32
    assert chunk.samples.shape == (1, 4)
    np.testing.assert_array_equal(
        chunk.samples[0], np.array([0.1, -2.5, 3e-5, 7], dtype=np.float32)
    )
    assert (chunk.n, chunk.channels) == (1, 4)


def test_chunk_round_trip_is_exact_for_float32() -> None:
    samples = RNG.standard_normal((50, 6)).astype(np.float32)
    samples[0, 0] = np.finfo(np.float32).max
    samples[0, 1] = np.finfo(np.float32).tiny
    samples[0, 2] = -0.0
    chunk = decode_sensor(encode_chunk("d", 5, samples), channels=6)
    np.testing.assert_array_equal(chunk.samples, samples)
    assert chunk.samples.flags.c_contiguous and chunk.samples.flags.writeable
    assert chunk.ts == 5


def test_chunk_from_float64_and_lists_rounds_to_float32() -> None:
    samples = RNG.standard_normal((3, 2))
    chunk = decode_sensor(encode_chunk("d", 0, samples.tolist()))
    np.testing.assert_array_equal(chunk.samples, samples.astype(np.float32))


def test_chunk_shortest_repr_keeps_messages_small() -> None:
    samples = RNG.standard_normal((DEFAULT_MAX_SAMPLES, 6)).astype(np.float32)
    raw = encode_chunk("dev", 1, samples)
    assert len(raw) < DEFAULT_MAX_MESSAGE_BYTES
    assert decode_sensor(raw).samples.shape == (DEFAULT_MAX_SAMPLES, 6)


def test_hand_written_json_from_other_languages_decodes() -> None:
    # Integers, exponents, whitespace and key order as any JSON library may write them.
    raw = b' { "values" : [ 1 , -2 , 3.5E2, 1e-3 ] , "ts":0, "device_id":"\\u00e9" } '
    chunk = decode_sensor(raw)
    assert chunk.device_id == "\u00e9"
    np.testing.assert_array_equal(chunk.samples, np.array([[1, -2, 350, 0.001]], dtype=np.float32))
    big = decode_sensor(sensor(values=[10**26]))
    assert big.samples[0, 0] == np.float32(1e26)


def test_decode_sensor_accepts_bytearray_and_memoryview() -> None:
    raw = encode_reading("d", 1, [1.0])
    for view in (bytearray(raw), memoryview(raw)):
        assert decode_sensor(view).device_id == "d"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: encode_reading("d", 1, [float("nan")]), "NaN"),
        (lambda: encode_reading("d", 1, [1e39]), "float32"),
        (lambda: encode_reading("d", 1, []), "non-empty"),
        (lambda: encode_reading("", 1, [1.0]), "device_id"),
        (lambda: encode_reading("d", -1, [1.0]), "ts"),
        (lambda: encode_reading("d", True, [1.0]), "ts"),  # type: ignore[arg-type]
        (lambda: encode_reading("d", 1, ["x"]), "values"),  # type: ignore[list-item]
        (lambda: encode_chunk("d", 1, [1.0, 2.0]), "(n, channels)"),
        (lambda: encode_chunk("d", 1, [[1.0], [1.0, 2.0]]), "samples"),
    ],
)
def test_sensor_encoders_refuse_bad_input(call: Callable[[], object], fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        call()


SENSOR_FAILURES = [
    pytest.param(None, "missing_field", "no value", id="tombstone"),
    pytest.param(b"", "not_json", "not valid JSON", id="empty"),
    pytest.param(b"\xff\xfe{}", "not_json", "UTF-8", id="not-utf8"),
    pytest.param(b"{'device_id': 1}", "not_json", "not valid JSON", id="python-repr"),
    pytest.param(b"[1, 2]", "wrong_type", "JSON object", id="array"),
    pytest.param(b"null", "wrong_type", "JSON object", id="null"),
    pytest.param(b"[" * 100_000, "not_json", "too deeply", id="deep-nesting"),
    pytest.param(b"1" * 5000, "not_json", "not valid JSON", id="huge-int"),
    pytest.param(sensor(device_id=...), "missing_field", "'device_id'", id="no-device"),
    pytest.param(sensor(device_id=""), "missing_field", "'device_id'", id="empty-device"),
    pytest.param(sensor(device_id=7), "wrong_type", "'device_id'", id="int-device"),
    pytest.param(sensor(device_id="x" * 300), "too_large", "'device_id'", id="long-device"),
    pytest.param(sensor(ts=..., values=[1]), "missing_field", "'ts'", id="no-ts"),
    pytest.param(sensor(ts="1", values=[1]), "wrong_type", "epoch milliseconds", id="str-ts"),
    pytest.param(sensor(ts=1.5, values=[1]), "wrong_type", "'ts'", id="float-ts"),
    pytest.param(sensor(ts=True, values=[1]), "wrong_type", "boolean", id="bool-ts"),
    pytest.param(sensor(ts=-1, values=[1]), "wrong_type", "[0, 2**63)", id="negative-ts"),
    pytest.param(sensor(ts=2**64, values=[1]), "wrong_type", "[0, 2**63)", id="huge-ts"),
    pytest.param(sensor(), "missing_field", "'values'", id="no-values"),
    pytest.param(sensor(values=[1], samples=[[1]]), "wrong_shape", "both", id="both"),
    pytest.param(sensor(values=1.0), "wrong_type", "'values'", id="scalar-values"),
    pytest.param(sensor(values=[]), "wrong_shape", "empty", id="empty-values"),
    pytest.param(sensor(values=[1, "2"]), "wrong_type", "only numbers", id="str-value"),
    pytest.param(sensor(values=[1, None]), "wrong_type", "only numbers", id="null-value"),
    pytest.param(sensor(values=[1.0, True]), "wrong_type", "booleans", id="bool-value"),
    pytest.param(sensor(values=[True]), "wrong_type", "booleans", id="only-bool"),
    pytest.param(sensor(values=[[1, 2]]), "wrong_type", "nested", id="nested-values"),
    pytest.param(sensor(values=[{"a": 1}]), "wrong_type", "only numbers", id="object-value"),
    pytest.param(b'{"device_id":"d","ts":1,"values":[NaN]}', "non_finite", "NaN", id="nan"),
    pytest.param(
        b'{"device_id":"d","ts":1,"values":[-Infinity]}', "non_finite", "Infinity", id="inf"
    ),
    pytest.param(sensor(values=[1e39]), "non_finite", "float32", id="over-float32"),
    pytest.param(b'{"device_id":"d","ts":1,"values":[1e999]}', "non_finite", "float32", id="1e999"),
    pytest.param(sensor(values=[10**60]), "non_finite", "float32", id="huge-int-value"),
    pytest.param(sensor(values=[10**60, "x"]), "wrong_type", "only numbers", id="bigint-junk"),
    pytest.param(sensor(samples=[]), "wrong_shape", "non-empty", id="empty-samples"),
    pytest.param(sensor(samples={"a": 1}), "wrong_type", "'samples'", id="object-samples"),
    pytest.param(sensor(samples=[1, 2]), "wrong_type", "array of numbers", id="flat-samples"),
    pytest.param(sensor(samples=[[1], [1, 2]]), "wrong_shape", "channel counts", id="ragged"),
    pytest.param(sensor(samples=[[]]), "wrong_shape", "empty reading", id="empty-row"),
    pytest.param(sensor(samples=[[[1]]]), "wrong_type", "nested", id="3d-samples"),
    pytest.param(sensor(samples=[[1, False]]), "wrong_type", "booleans", id="bool-sample"),
    pytest.param(
        sensor(samples=[[0.0]] * (DEFAULT_MAX_SAMPLES + 1)), "too_large", "split", id="samples"
    ),
    pytest.param(
        sensor(values=[0] * (DEFAULT_MAX_CHANNELS + 1)), "too_large", "channels", id="channels"
    ),
    pytest.param(
        b" " * (DEFAULT_MAX_MESSAGE_BYTES + 1), "too_large", "max_bytes", id="message-bytes"
    ),
    pytest.param("text", "wrong_type", "bytes", id="str-value"),
]


@pytest.mark.parametrize(("raw", "reason", "fragment"), SENSOR_FAILURES)
def test_decode_sensor_failures(raw: bytes | None, reason: str, fragment: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_sensor(raw)
    assert info.value.reason == reason, str(info.value)
    assert_meaningful(info.value, fragment)


def test_decode_sensor_channels_and_limits() -> None:
    raw = encode_chunk("d", 1, np.zeros((4, 3), np.float32))
    assert decode_sensor(raw, channels=3).channels == 3
    with pytest.raises(DecodeError) as info:
        decode_sensor(raw, channels=6)
    assert info.value.reason == "wrong_shape"
    assert_meaningful(info.value, "3 channel(s)", "expects 6")
    with pytest.raises(DecodeError) as info:
        decode_sensor(raw, max_samples=3)
    assert info.value.reason == "too_large"
    assert_meaningful(info.value, "4 readings", "3")
    with pytest.raises(DecodeError) as info:
        decode_sensor(raw, max_bytes=len(raw) - 1)
    assert info.value.reason == "too_large"
    assert_meaningful(info.value, f"{len(raw)} bytes")
    assert decode_sensor(raw, max_bytes=len(raw)).n == 4


def test_device_id_and_float32_boundaries_are_accepted() -> None:
    f32max = float(np.finfo(np.float32).max)
    chunk = decode_sensor(sensor(device_id="x" * 256, values=[f32max, -f32max, 5e-324]))
    assert np.isfinite(chunk.samples).all()
    assert chunk.samples[0, 0] == np.float32(f32max)


def test_decode_error_pickles_with_reason() -> None:
    import pickle

    with pytest.raises(DecodeError) as info:
        decode_sensor(b"nope")
    copy = pickle.loads(pickle.dumps(info.value))  # noqa: S301 (our own object)
    assert (copy.reason, str(copy)) == (info.value.reason, str(info.value))


# ------------------------------------------------------------- sensor records


@pytest.mark.parametrize(
    "headers",
    [
        None,
        [],
        [("content-type", b"")],
        [("content-type", b"application/json")],
        [("content-type", b"text/json")],
        [("Content-Type", b" Application/JSON; charset=utf-8 ")],
        {"content-type": "application/json"},
        [("device-id", b"dev-1"), ("content-type", b"application/json")],
    ],
    ids=["none", "empty", "empty-value", "json", "text-json", "params", "mapping", "second"],
)
def test_decode_sensor_record_accepts_the_sensor_content_types(headers: object) -> None:
    raw = encode_reading("dev-1", 5, [1.0, 2.0])
    chunk = decode_sensor_record(raw, headers, channels=2)  # type: ignore[arg-type]
    assert (chunk.device_id, chunk.ts, chunk.channels) == ("dev-1", 5, 2)


@pytest.mark.parametrize("ctype", [b"image/png", b"text/plain", b"application/x-npy"])
def test_decode_sensor_record_refuses_other_content_types(ctype: bytes) -> None:
    raw = encode_reading("dev-1", 5, [1.0])
    with pytest.raises(DecodeError) as info:
        decode_sensor_record(raw, [("content-type", ctype)])
    assert info.value.reason == "unknown_content_type"
    assert_meaningful(info.value, repr(ctype.decode()), "application/json", "sensor topic")


def test_decode_sensor_record_checks_the_first_content_type_header() -> None:
    raw = encode_reading("dev-1", 5, [1.0])
    headers = [("content-type", b"image/png"), ("content-type", b"application/json")]
    with pytest.raises(DecodeError) as info:
        decode_sensor_record(raw, headers)
    assert info.value.reason == "unknown_content_type"


def test_decode_sensor_record_passes_the_limits_on() -> None:
    raw = encode_chunk("d", 1, np.zeros((4, 3), np.float32))
    assert decode_sensor_record(raw, None, channels=3, max_bytes=len(raw)).n == 4
    for kwargs, reason in [
        ({"channels": 6}, "wrong_shape"),
        ({"max_bytes": len(raw) - 1}, "too_large"),
        ({"max_samples": 3}, "too_large"),
        ({"max_channels": 2}, "too_large"),
    ]:
        with pytest.raises(DecodeError) as info:
            decode_sensor_record(raw, [], **kwargs)  # type: ignore[arg-type]
        assert info.value.reason == reason, kwargs
    with pytest.raises(DecodeError) as info:
        decode_sensor_record(None, [("content-type", b"application/json")])
    assert info.value.reason == "missing_field"
