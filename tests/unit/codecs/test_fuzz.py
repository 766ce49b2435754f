"""Fuzzing the decoders: whatever the bytes, a valid value or a DecodeError, nothing else.

Why one module of this size: three families of generated input (raw bytes, JSON-ish
values, mutated valid bytes), one section each, driven through every decoder with the
same outcome checks (``outcome``, ``check_*`` at the top); split, each file would import
those checks and the shared valid inputs.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image

from stream import topics
from stream.codecs import (
    DEAD_LETTER_HEADERS,
    dead_letter_headers,
    decode_dead_letter,
    decode_image,
    decode_result,
    decode_sensor,
    encode_chunk,
    encode_jpeg,
    encode_npy,
    encode_png,
    encode_reading,
    encode_result,
    images,
)
from stream.exceptions import DecodeError
from stream.schemas import InferenceResult
from tests.unit.codecs.helpers import FUZZ

IMAGE_HEADERS: list[dict[str, str] | None] = [
    None,
    {"content-type": "image/png"},
    {"content-type": "image/jpeg"},
    {"content-type": "application/x-npy"},
    {"content-type": "application/json"},
]


def outcome(decode: Callable[[], Any]) -> Any:
    """Run a decoder: return its value, or None after a DecodeError with a known reason."""
    try:
        return decode()
    except DecodeError as err:
        assert err.reason in DecodeError.REASONS
        assert str(err)
        return None


def check_sensor(value: bytes) -> None:
    chunk = outcome(lambda: decode_sensor(value))
    if chunk is not None:
        assert chunk.samples.dtype == np.float32
        assert chunk.samples.ndim == 2 and chunk.samples.size > 0
        assert np.isfinite(chunk.samples).all()
        assert isinstance(chunk.ts, int) and chunk.ts >= 0
        assert isinstance(chunk.device_id, str) and chunk.device_id


def check_image(value: bytes, headers: dict[str, str] | None) -> None:
    frame = outcome(lambda: decode_image(value, headers, max_pixels=512 * 512))
    if frame is not None:
        assert frame.pixels.dtype == np.uint8
        assert frame.pixels.ndim == 3 and frame.pixels.shape[2] in (1, 3)
        assert frame.pixels.shape[0] * frame.pixels.shape[1] <= 512 * 512


def check_result(value: bytes) -> None:
    r = outcome(lambda: decode_result(value))
    if r is not None:
        assert isinstance(r, InferenceResult)
        assert math.isfinite(r.score)
        # What decodes re-encodes (no NaN, types as declared).
        assert decode_result(encode_result(r)) == r


# -------------------------------------------------------------------- raw bytes


@FUZZ
@given(st.binary(max_size=2048))
@example(b"")
@example(b"\x89PNG\r\n\x1a\n")
@example(b"\xff\xd8\xff")
@example(b"\x93NUMPY")
@example(b"[" * 50_000)
@example(b'{"device_id":"d","ts":1,"values":' + b"[" * 50_000)
def test_arbitrary_bytes(value: bytes) -> None:
    check_sensor(value)
    check_result(value)
    for headers in IMAGE_HEADERS:
        check_image(value, headers)
    outcome(lambda: decode_dead_letter(value, None))


@FUZZ
@given(
    st.one_of(st.none(), st.binary(max_size=64)),
    st.lists(
        st.tuples(
            st.sampled_from([*DEAD_LETTER_HEADERS, topics.H_CONTENT_TYPE, "other"]),
            st.one_of(st.none(), st.binary(max_size=24)),
        ),
        max_size=10,
    ),
)
def test_dead_letter_with_arbitrary_headers(value: bytes | None, headers: list[Any]) -> None:
    dl = outcome(lambda: decode_dead_letter(value, headers))
    if dl is not None:
        assert dl.value == value
        assert isinstance(dl.source_partition, int) and isinstance(dl.source_offset, int)
        assert topics.H_ERROR_TYPE not in dl.headers


@FUZZ
@given(
    st.binary(max_size=256),
    st.dictionaries(
        st.sampled_from([topics.H_CONTENT_TYPE, topics.H_DEVICE_ID, topics.H_TS, "x"]),
        st.one_of(st.binary(max_size=40), st.text(max_size=40)),
    ),
)
def test_image_with_arbitrary_headers(value: bytes, headers: dict[str, Any]) -> None:
    valid = encode_png(np.zeros((2, 2), np.uint8))
    for data in (value, valid):
        frame = outcome(lambda d=data: decode_image(d, headers))  # type: ignore[misc]
        if frame is not None:
            assert frame.ts is None or 0 <= frame.ts < 2**63


# ------------------------------------------------------------------- JSON-ish values

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**80), max_value=10**80),
    st.floats(),  # NaN and Infinity included: json.dumps writes them
    st.text(max_size=20),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(st.text(max_size=8), children, max_size=6),
    ),
    max_leaves=40,
)
NUMBERS = st.one_of(
    st.floats(),
    st.integers(min_value=-(10**45), max_value=10**45),
    st.booleans(),
    st.none(),
)
SENSOR_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "device_id": st.one_of(st.text(max_size=300), JSON_SCALARS),
        "ts": st.one_of(st.integers(min_value=-5, max_value=2**65), JSON_SCALARS),
        "values": st.one_of(st.lists(NUMBERS, max_size=8), JSON_VALUES),
        "samples": st.one_of(
            st.lists(st.lists(NUMBERS, min_size=1, max_size=4), max_size=6), JSON_VALUES
        ),
    },
)


@FUZZ
@given(st.one_of(JSON_VALUES, SENSOR_LIKE))
def test_json_values(value: Any) -> None:
    raw = json.dumps(value).encode()
    check_sensor(raw)
    check_result(raw)
    check_image(raw, None)
    check_image(raw, {"content-type": "application/x-npy"})


@FUZZ
@given(SENSOR_LIKE)
def test_sensor_like_objects_decode_exactly_when_valid(obj: dict[str, Any]) -> None:
    raw = json.dumps(obj).encode()
    chunk = outcome(lambda: decode_sensor(raw))
    rows = obj.get("samples") if "samples" in obj else [obj.get("values")]
    plausible = (
        isinstance(obj.get("device_id"), str)
        and 0 < len(obj["device_id"]) <= 256
        and type(obj.get("ts")) is int
        and 0 <= obj["ts"] < 2**63
        and not ("samples" in obj and "values" in obj)
        and isinstance(rows, list)
        and len(rows) > 0
        and all(isinstance(r, list) and len(r) == len(rows[0]) > 0 for r in rows)
        and all(
            type(v) in (int, float) and abs(float(v)) < 3.4e38
            for r in rows
            for v in r  # type: ignore[union-attr]
        )
    )
    if plausible:
        assert chunk is not None, raw
        expected = np.asarray(rows, dtype=np.float64).astype(np.float32)
        np.testing.assert_array_equal(chunk.samples, expected)
    elif chunk is not None:
        # Only numbers between 3.4e38 and the float32 rounding limit are accepted
        # beyond the plausible set.
        assert np.isfinite(chunk.samples).all()


RESULT_FIELDS = {
    "device_id": st.text(max_size=8),
    "model": st.text(max_size=8),
    "version": st.text(max_size=8),
    "label": st.text(max_size=8),
    "score": NUMBERS,
    "scores": st.dictionaries(st.text(max_size=4), NUMBERS, max_size=3),
    "source": st.dictionaries(
        st.sampled_from(["topic", "partition", "offset", "first_offset", "last_offset"]),
        JSON_SCALARS,
    ),
    "latency_ms": st.dictionaries(st.sampled_from(["queue", "infer", "e2e"]), NUMBERS),
    "ts": st.one_of(st.none(), st.integers(min_value=-1, max_value=2**64)),
    "produced_at": st.integers(min_value=-1, max_value=2**64),
    "agent_id": st.text(max_size=8),
    "true_label": st.one_of(st.none(), st.text(max_size=4), st.integers()),
    "headers": st.dictionaries(st.text(max_size=4), st.one_of(st.text(max_size=4), NUMBERS)),
}


@FUZZ
@given(st.fixed_dictionaries({}, optional=RESULT_FIELDS))
def test_result_like_objects(obj: dict[str, Any]) -> None:
    check_result(json.dumps(obj).encode())


# ---------------------------------------------------------------- mutated valid bytes


def _valid_inputs() -> dict[str, bytes]:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, size=(9, 7), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("P").save(buf, format="PNG")
    prog = io.BytesIO()
    Image.fromarray(rgb).save(prog, format="JPEG", progressive=True)
    return {
        "png-rgb": encode_png(rgb),
        "png-gray": encode_png(gray),
        "png-palette": buf.getvalue(),
        "jpeg-rgb": encode_jpeg(rgb),
        "jpeg-gray": encode_jpeg(gray),
        "jpeg-progressive": prog.getvalue(),
        "npy-rgb": encode_npy(rgb),
        "npy-gray": encode_npy(gray),
        "reading": encode_reading("dev", 5, [1.0, 2.5, -3.0]),
        "chunk": encode_chunk("dev", 5, rng.standard_normal((4, 3))),
    }


VALID = _valid_inputs()


@st.composite
def mutated(draw: st.DrawFn, names: list[str]) -> tuple[str, bytes]:
    name = draw(st.sampled_from(names))
    data = bytearray(VALID[name])
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        if not data:
            break
        i = draw(st.integers(min_value=0, max_value=len(data) - 1))
        if kind == "flip":
            data[i] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif kind == "set":
            data[i] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, ord("["), ord('"')]))
        elif kind == "truncate":
            del data[i:]
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[i : i + draw(st.integers(min_value=1, max_value=16))]
    return name, bytes(data)


@FUZZ
@given(mutated([n for n in VALID if not n.startswith(("reading", "chunk"))]))
def test_mutated_images(case: tuple[str, bytes]) -> None:
    _, data = case
    for headers in IMAGE_HEADERS:
        check_image(data, headers)


def _jpeg_outcome(data: bytes) -> tuple[str, Any]:
    try:
        return "ok", decode_image(data, {"content-type": "image/jpeg"}).pixels
    except DecodeError as err:
        return err.reason, err.message


@FUZZ
@given(mutated([n for n in VALID if n.startswith("jpeg")]))
def test_mutated_jpegs_decode_alike_with_and_without_simplejpeg(case: tuple[str, bytes]) -> None:
    """simplejpeg is only a faster path: same pixels, same errors and messages as PIL."""
    if images._simplejpeg is None:
        pytest.skip("simplejpeg is not installed")
    _, data = case
    fast = _jpeg_outcome(data)
    saved, images._simplejpeg = images._simplejpeg, None
    try:
        slow = _jpeg_outcome(data)
    finally:
        images._simplejpeg = saved
    assert fast[0] == slow[0]
    if fast[0] == "ok":
        np.testing.assert_array_equal(fast[1], slow[1])
    else:
        assert fast[1] == slow[1]


@FUZZ
@given(mutated(["reading", "chunk"]))
def test_mutated_sensor_json(case: tuple[str, bytes]) -> None:
    _, data = case
    check_sensor(data)
    check_result(data)


@FUZZ
@given(st.data())
def test_mutated_results(data: st.DataObject) -> None:
    raw = bytearray(
        encode_result(
            InferenceResult(
                device_id="d",
                model="m",
                version="1",
                label="a",
                score=0.5,
                scores={"a": 0.5},
                source={"topic": "t", "partition": 0, "offset": 1},
                latency_ms={"queue": 1.0, "infer": 2.0, "e2e": 3.0},
                ts=1,
                produced_at=2,
                agent_id="x",
                headers={"h": "v"},
            )
        )
    )
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        i = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
        raw[i] = data.draw(st.integers(min_value=0, max_value=255))
    check_result(bytes(raw))


@pytest.mark.parametrize("name", sorted(VALID))
def test_unmutated_inputs_decode(name: str) -> None:
    """The mutation seeds themselves are valid, so mutations start from real messages."""
    if name.startswith(("reading", "chunk")):
        assert decode_sensor(VALID[name]).channels == 3
    else:
        assert decode_image(VALID[name]).pixels.size > 0


def test_dead_letter_headers_round_trip_any_text() -> None:
    @FUZZ
    @given(
        st.text(max_size=30),
        st.text(max_size=2000),
        st.text(max_size=30),
        st.integers(min_value=-1, max_value=2**31),
        st.integers(min_value=-1, max_value=2**62),
    )
    def run(error_type: str, message: str, topic: str, partition: int, offset: int) -> None:
        headers = dead_letter_headers(
            [("k", b"v")],
            error_type=error_type,
            error_message=message,
            topic=topic,
            partition=partition,
            offset=offset,
            agent_id="a",
        )
        dl = outcome(lambda: decode_dead_letter(b"x", headers))
        assert dl is not None
        assert (dl.error_type, dl.source_topic) == (error_type, topic)
        assert (dl.source_partition, dl.source_offset) == (partition, offset)
        assert dl.error_message == message or (
            len(message) > 1000 and dl.error_message == message[:997] + "..."
        )
        assert dl.headers == {"k": "v"}

    run()
