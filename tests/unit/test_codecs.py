"""Wire contract v1 codecs: round trips, and failures with their reason and message."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from stream import codecs, topics
from stream.codecs import (
    DEFAULT_MAX_CHANNELS,
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_SAMPLES,
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
    headers_dict,
    image_headers,
    sensor_headers,
)
from stream.exceptions import DecodeError
from stream.schemas import CONTENT_TYPES, DeadLetter, ImageFrame, InferenceResult, SensorChunk

RNG = np.random.default_rng(7)
#: An f-string placeholder that was never formatted, e.g. "{field}".
UNFORMATTED = re.compile(r"\{[a-z_]+(![rs])?\}")


def assert_meaningful(err: DecodeError, *fragments: str) -> None:
    text = str(err)
    assert err.reason in DecodeError.REASONS
    assert text == err.message
    assert len(text) > 25, text
    assert not UNFORMATTED.search(text), text
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"


def sensor(**fields: object) -> bytes:
    base: dict[str, object] = {"device_id": "dev-1", "ts": 1_718_000_000_000}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def image(h: int = 6, w: int = 5, c: int | None = 3) -> np.ndarray:
    shape = (h, w) if c is None else (h, w, c)
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


def result(**changes: object) -> InferenceResult:
    fields: dict[str, object] = {
        "device_id": "dev-1",
        "model": "digits-cnn",
        "version": "20240610120000",
        "label": "7",
        "score": 0.875,
        "scores": {"1": 0.125, "7": 0.875},
        "source": {"topic": "images", "partition": 2, "offset": 41},
        "latency_ms": {"queue": 1.5, "infer": 0.75, "e2e": 3.25},
        "ts": 1_718_000_000_000,
        "produced_at": 1_718_000_000_004,
        "agent_id": "agent-a",
    }
    fields.update(changes)
    return InferenceResult(**fields)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ sensors


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


def test_sensor_headers() -> None:
    assert sensor_headers("dev-1", 12) == [
        ("content-type", b"application/json"),
        ("device-id", b"dev-1"),
        ("ts", b"12"),
    ]
    assert sensor_headers("d", 1, label="walking")[-1] == (topics.H_LABEL, b"walking")


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


# ------------------------------------------------------------------------- images


@pytest.mark.parametrize("channels", [None, 1, 3])
@pytest.mark.parametrize(
    ("encode", "ctype"),
    [(encode_png, "image/png"), (encode_npy, "application/x-npy")],
)
def test_lossless_image_round_trip(
    encode: Callable[[np.ndarray], bytes], ctype: str, channels: int | None
) -> None:
    pixels = image(7, 9, channels)
    raw = encode(pixels)
    frame = decode_image(raw, image_headers(ctype, "cam-1", 1_718_000_000_000, label="3"))
    assert isinstance(frame, ImageFrame)
    assert frame.content_type == ctype
    assert (frame.device_id, frame.ts) == ("cam-1", 1_718_000_000_000)
    assert frame.pixels.dtype == np.uint8
    expected = pixels if pixels.ndim == 3 else pixels[:, :, None]
    np.testing.assert_array_equal(frame.pixels, expected)
    assert frame.pixels.flags.c_contiguous and frame.pixels.flags.writeable
    # No headers at all: the content type is sniffed, device id and ts are unknown.
    sniffed = decode_image(raw)
    assert sniffed.content_type == ctype
    assert (sniffed.device_id, sniffed.ts) == (None, None)
    np.testing.assert_array_equal(sniffed.pixels, expected)


@pytest.mark.parametrize("channels", [None, 1, 3])
def test_jpeg_round_trip_is_close(channels: int | None) -> None:
    pixels = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (24, 1))
    if channels is not None:
        pixels = np.repeat(pixels[:, :, None], channels, axis=2)
    raw = encode_jpeg(pixels, quality=95)
    assert raw.startswith(b"\xff\xd8\xff")
    frame = decode_image(raw, {"content-type": "image/jpeg"})
    c = 1 if channels in (None, 1) else 3
    assert frame.pixels.shape == (24, 32, c)
    diff = np.abs(frame.pixels.astype(int) - pixels.reshape(24, 32, -1).astype(int))
    assert diff.mean() < 3


def test_image_headers() -> None:
    assert image_headers("image/png", None, None) == [("content-type", b"image/png")]
    assert image_headers("image/jpeg", "cam", 5, "cat") == [
        ("content-type", b"image/jpeg"),
        ("device-id", b"cam"),
        ("ts", b"5"),
        ("label", b"cat"),
    ]
    with pytest.raises(ValueError, match="content_type"):
        image_headers("image/gif", None, None)


def test_decode_image_header_forms() -> None:
    raw = encode_png(image(2, 2))
    as_dict = decode_image(raw, {"content-type": "image/png", "device-id": "c", "ts": "9"})
    as_bytes_dict = decode_image(raw, {"Content-Type": b"image/png; x=y", "ts": b" 9 "})
    as_alias = decode_image(raw, [("content-type", b"image/x-png"), ("ts", b"")])
    assert (as_dict.device_id, as_dict.ts) == ("c", 9)
    assert (as_bytes_dict.content_type, as_bytes_dict.ts) == ("image/png", 9)
    assert (as_alias.content_type, as_alias.ts) == ("image/png", None)
    jpeg = encode_jpeg(image(2, 2))
    assert decode_image(jpeg, {"content-type": "image/jpg"}).content_type == "image/jpeg"
    # An empty content-type header falls back to sniffing.
    assert decode_image(jpeg, [("content-type", b"")]).content_type == "image/jpeg"


def _pil_bytes(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("im", "fmt", "channels"),
    [
        (Image.new("RGBA", (4, 3), (10, 20, 30, 40)), "PNG", 3),
        (Image.new("P", (4, 3), 5), "PNG", 3),
        (Image.new("LA", (4, 3), (50, 60)), "PNG", 1),
        (Image.new("1", (4, 3), 1), "PNG", 1),
        (Image.new("CMYK", (4, 3), (0, 0, 0, 0)), "JPEG", 3),
    ],
    ids=["rgba", "palette", "la", "bilevel", "cmyk"],
)
def test_modes_convert_to_gray_or_rgb(im: Image.Image, fmt: str, channels: int) -> None:
    frame = decode_image(_pil_bytes(im, fmt))
    assert frame.pixels.shape == (3, 4, channels)
    assert frame.pixels.dtype == np.uint8


def test_rgba_drops_alpha_and_bilevel_is_0_or_255() -> None:
    rgba = decode_image(_pil_bytes(Image.new("RGBA", (2, 2), (10, 20, 30, 40))))
    assert rgba.pixels[0, 0].tolist() == [10, 20, 30]
    bilevel = decode_image(_pil_bytes(Image.new("1", (2, 2), 1)))
    assert bilevel.pixels[0, 0, 0] == 255


def test_16_bit_png_scales_to_8_bits() -> None:
    wide = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000).astype(np.uint16)
    frame = decode_image(_pil_bytes(Image.fromarray(wide)))
    assert frame.pixels.shape == (3, 4, 1)
    np.testing.assert_array_equal(frame.pixels[:, :, 0], (wide >> 8).astype(np.uint8))


def test_fortran_ordered_npy_decodes_in_c_order() -> None:
    pixels = np.asfortranarray(image(3, 4, 3))
    buf = io.BytesIO()
    np.save(buf, pixels)
    frame = decode_image(buf.getvalue())
    np.testing.assert_array_equal(frame.pixels, pixels)
    assert frame.pixels.flags.c_contiguous


def test_npy_version_2_header_decodes() -> None:
    pixels = image(2, 3, 1)
    buf = io.BytesIO()
    np.lib.format.write_array(buf, pixels, version=(2, 0))
    np.testing.assert_array_equal(decode_image(buf.getvalue()).pixels, pixels)


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: encode_png(np.zeros((2, 2), np.float32)), "uint8"),
        (lambda: encode_png(np.zeros((2, 2, 4), np.uint8)), "(H, W, 3)"),
        (lambda: encode_jpeg(np.zeros((0, 2), np.uint8)), "(H, W)"),
        (lambda: encode_jpeg(np.zeros((2, 2), np.uint8), quality=0), "quality"),
        (lambda: encode_npy(np.zeros((1, 2, 2, 3), np.uint8)), "(H, W, 1)"),
    ],
)
def test_image_encoders_refuse_bad_input(call: Callable[[], object], fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        call()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _npy_header(header: str, version: bytes = b"\x01\x00") -> bytes:
    body = header.encode("latin1")
    pad = 64 - (10 + len(body) + 1) % 64
    body += b" " * pad + b"\n"
    return b"\x93NUMPY" + version + len(body).to_bytes(2, "little") + body


PNG = encode_png(np.zeros((4, 4, 3), np.uint8))
JPEG = encode_jpeg(np.zeros((4, 4, 3), np.uint8))
NPY = encode_npy(np.zeros((4, 4, 3), np.uint8))

IMAGE_FAILURES = [
    pytest.param(None, None, "missing_field", "no value", id="tombstone"),
    pytest.param(b"", None, "unknown_content_type", "content-type", id="empty"),
    pytest.param(b"GIF89a....", None, "unknown_content_type", "PNG, JPEG", id="gif"),
    pytest.param(PNG, {"content-type": "image/gif"}, "unknown_content_type", "image/gif", id="h"),
    pytest.param(
        PNG, {"content-type": "application/json"}, "unknown_content_type", "sensor", id="json"
    ),
    pytest.param(PNG, {"content-type": "image/jpeg"}, "corrupt_image", "say image/png", id="lie"),
    pytest.param(JPEG, {"content-type": "image/png"}, "corrupt_image", "not a PNG", id="lie2"),
    pytest.param(
        b"junk", {"content-type": "application/x-npy"}, "corrupt_image", ".npy", id="npy-junk"
    ),
    pytest.param(PNG[:30], None, "corrupt_image", "PNG", id="truncated-png"),
    pytest.param(JPEG[:40], None, "corrupt_image", "JPEG", id="truncated-jpeg"),
    pytest.param(NPY[:-1], None, "corrupt_image", "truncated", id="truncated-npy"),
    pytest.param(NPY + b"\x00", None, "corrupt_image", "truncated or altered", id="long-npy"),
    pytest.param(
        _npy(np.zeros((2, 2), np.float32)), None, "wrong_dtype", "float32", id="float-npy"
    ),
    pytest.param(
        _npy(np.array([{"a": 1}], dtype=object)), None, "wrong_dtype", "object", id="pickle"
    ),
    pytest.param(_npy(np.zeros((2, 2, 4), np.uint8)), None, "wrong_shape", "(2, 2, 4)", id="4c"),
    pytest.param(_npy(np.zeros((5,), np.uint8)), None, "wrong_shape", "(5,)", id="1d"),
    pytest.param(_npy(np.zeros((0, 3), np.uint8)), None, "wrong_shape", "(0, 3)", id="0px"),
    pytest.param(
        _npy_header("{'descr': '|u1', 'fortran_order': False, 'shape': (100000, 100000, 3), }"),
        None,
        "image_too_large",
        "100000x100000",
        id="npy-bomb",
    ),
    pytest.param(
        _npy_header("{'descr': '|u1', 'fortran_order': False, 'shape': (-2, 3), }"),
        None,
        "wrong_shape",
        "(-2, 3)",
        id="npy-negative",
    ),
    pytest.param(
        _npy_header("{'descr': '|u1', 'shape': (2, 3), }"),
        None,
        "corrupt_image",
        ".npy",
        id="npy-header-keys",
    ),
    pytest.param(_npy_header("__import__('os')"), None, "corrupt_image", ".npy", id="npy-code"),
    pytest.param(
        _npy_header("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 2), }", b"\x03\x00"),
        None,
        "corrupt_image",
        "version",
        id="npy-v3",
    ),
    pytest.param(PNG, {"ts": "yesterday"}, "bad_header", "ts header", id="ts-text"),
    pytest.param(PNG, {"ts": "-5"}, "bad_header", "epoch milliseconds", id="ts-negative"),
    pytest.param(PNG, {"ts": "1" * 30}, "bad_header", "ts header", id="ts-huge"),
    pytest.param(PNG, {"ts": "\u0661\u0662"}, "bad_header", "ts header", id="ts-arabic"),
    pytest.param(PNG, {"device-id": "d" * 300}, "bad_header", "device-id", id="long-device"),
    pytest.param(
        b"\x89PNG" + b"\x00" * (DEFAULT_MAX_MESSAGE_BYTES), None, "too_large", "max_bytes", id="mb"
    ),
]


@pytest.mark.parametrize(("raw", "headers", "reason", "fragment"), IMAGE_FAILURES)
def test_decode_image_failures(
    raw: bytes | None, headers: dict[str, str] | None, reason: str, fragment: str
) -> None:
    with pytest.raises(DecodeError) as info:
        decode_image(raw, headers)
    assert info.value.reason == reason, str(info.value)
    assert_meaningful(info.value, fragment)


@pytest.mark.parametrize("encode", [encode_png, encode_jpeg, encode_npy])
def test_pixel_limit_is_checked(encode: Callable[[np.ndarray], bytes]) -> None:
    raw = encode(np.zeros((40, 50), np.uint8))
    assert decode_image(raw, max_pixels=2000).pixels.shape == (40, 50, 1)
    with pytest.raises(DecodeError) as info:
        decode_image(raw, max_pixels=1999)
    assert info.value.reason == "image_too_large"
    assert_meaningful(info.value, "50x40", "max_pixels")


def _claim_size(raw: bytes, ctype: str, width: int, height: int) -> bytes:
    """Rewrite the size in a PNG's IHDR or a JPEG's start-of-frame, as an attacker would."""
    data = bytearray(raw)
    if ctype == "image/png":
        data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    else:
        sof = data.index(b"\xff\xc0")
        data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


@pytest.mark.parametrize("ctype", ["image/png", "image/jpeg"])
def test_pixel_limit_is_checked_before_decoding(ctype: str) -> None:
    # A header claiming 60000x50000 pixels: decoding would allocate 3 GB.
    small = encode_png(image(4, 4)) if ctype == "image/png" else encode_jpeg(image(4, 4))
    raw = _claim_size(small, ctype, 60000, 50000)
    with pytest.raises(DecodeError) as info:
        decode_image(raw, {"content-type": ctype})
    assert info.value.reason == "image_too_large"
    assert_meaningful(info.value, "60000x50000", str(DEFAULT_MAX_PIXELS))
    # Within the limit, the bytes reach PIL: a PNG whose IHDR no longer matches its CRC
    # is corrupt; libjpeg pads a JPEG whose data ends early.
    smaller = _claim_size(small, ctype, 60, 50)
    if ctype == "image/png":
        with pytest.raises(DecodeError) as info:
            decode_image(smaller, {"content-type": ctype})
        assert info.value.reason == "corrupt_image"
    else:
        assert decode_image(smaller, {"content-type": ctype}).pixels.shape == (50, 60, 3)


def test_pil_decompression_bomb_guard_maps_to_image_too_large(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    raw = encode_png(np.zeros((10, 10), np.uint8))  # 100 > 2 * 10: PIL raises on open
    with pytest.raises(DecodeError) as info:
        decode_image(raw, max_pixels=10**6)
    assert info.value.reason == "image_too_large"
    assert_meaningful(info.value, "too large")


# ------------------------------------------------------------------------ results


def test_result_round_trip() -> None:
    r = result(true_label="7", headers={"trace": "abc"})
    raw = encode_result(r)
    assert json.loads(raw)["source"] == {"topic": "images", "partition": 2, "offset": 41}
    assert decode_result(raw) == r


def test_result_round_trip_defaults_and_window_source() -> None:
    r = result(
        ts=None,
        source={"topic": "sensors", "partition": 0, "first_offset": 10, "last_offset": 109},
    )
    back = decode_result(encode_result(r))
    assert back == r
    assert (back.true_label, back.headers, back.ts) == (None, {}, None)


def test_result_decoder_ignores_unknown_fields_and_takes_int_scores() -> None:
    data = json.loads(encode_result(result()))
    data["future_field"] = {"x": 1}
    data["score"] = 1
    back = decode_result(json.dumps(data).encode())
    assert back.score == 1.0 and isinstance(back.score, float)


def test_encode_result_refuses_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        encode_result(result(score=float("nan")))


def _result_json(**changes: object) -> bytes:
    data = json.loads(encode_result(result()))
    for key, value in changes.items():
        if value is ...:
            data.pop(key)
        else:
            data[key] = value
    return json.dumps(data).encode()


RESULT_FAILURES = [
    pytest.param(b"not json", "not_json", "not valid JSON", id="text"),
    pytest.param(b"[]", "wrong_type", "JSON object", id="array"),
    pytest.param(_result_json(model=...), "missing_field", "'model'", id="no-model"),
    pytest.param(_result_json(score="high"), "wrong_type", "'score'", id="str-score"),
    pytest.param(_result_json(score=True), "wrong_type", "'score'", id="bool-score"),
    pytest.param(_result_json(score=10**400 // 10**90), "non_finite", "'score'", id="big"),
    pytest.param(_result_json(scores=[1]), "wrong_type", "'scores'", id="list-scores"),
    pytest.param(_result_json(scores={"a": "b"}), "wrong_type", "'a'", id="str-in-scores"),
    pytest.param(_result_json(latency_ms=...), "missing_field", "'latency_ms'", id="no-lat"),
    pytest.param(_result_json(source="images"), "wrong_type", "'source'", id="str-source"),
    pytest.param(_result_json(source={"offset": -1}), "wrong_type", "'offset'", id="neg-off"),
    pytest.param(_result_json(ts="now"), "wrong_type", "'ts'", id="str-ts"),
    pytest.param(_result_json(produced_at=...), "missing_field", "'produced_at'", id="no-at"),
    pytest.param(_result_json(headers={"a": 1}), "wrong_type", "'headers'", id="int-header"),
    pytest.param(_result_json(true_label=3), "wrong_type", "'true_label'", id="int-label"),
    pytest.param(b'{"score": NaN}', "non_finite", "NaN", id="nan"),
]


@pytest.mark.parametrize(("raw", "reason", "fragment"), RESULT_FAILURES)
def test_decode_result_failures(raw: bytes, reason: str, fragment: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_result(raw)
    assert info.value.reason == reason, str(info.value)
    assert_meaningful(info.value, fragment)


# --------------------------------------------------------------------- dead letters


def test_dead_letter_round_trip() -> None:
    original = [
        ("content-type", b"image/png"),
        ("device-id", b"cam-1"),
        ("trace", b"\xff\xfe"),
        (topics.H_ERROR_TYPE, b"stale"),  # from an earlier dead-lettering: replaced
    ]
    headers = dead_letter_headers(
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
    headers = dead_letter_headers(
        None,
        error_type="missing_field",
        error_message="x" * 5000,
        topic="sensors",
        partition=0,
        offset=0,
        agent_id="a",
    )
    dl = decode_dead_letter(None, headers)
    assert dl.value is None and dl.headers == {}
    assert len(dl.error_message) == codecs.MAX_ERROR_MESSAGE_CHARS
    assert dl.error_message.endswith("...")


def test_dead_letter_headers_accept_confluent_style_none_values() -> None:
    headers = dead_letter_headers(
        [("empty", None), ("text", "v")],  # type: ignore[list-item]
        error_type="not_json",
        error_message="m",
        topic="t",
        partition=1,
        offset=2,
        agent_id="a",
    )
    assert headers[:2] == [("empty", b""), ("text", b"v")]


def _dl_headers(**changes: object) -> list[tuple[str, bytes]]:
    base = dict(
        dead_letter_headers(
            None,
            error_type="not_json",
            error_message="m",
            topic="t",
            partition=1,
            offset=2,
            agent_id="a",
        )
    )
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


# ------------------------------------------------------------------------ headers


def test_headers_dict_is_tolerant() -> None:
    assert headers_dict(None) == {}
    assert headers_dict([]) == {}
    confluent_style = [("a", b"1"), ("b", None), ("c", b"\xff"), ("a", b"2")]
    assert headers_dict(confluent_style) == {  # type: ignore[arg-type]
        "a": "2",
        "b": "",
        "c": "\ufffd",
    }
    assert headers_dict({"x": "y", b"k": b"v"}) == {"x": "y", "k": "v"}
    assert headers_dict([("ok", b"1"), ("bad",), 5]) == {"ok": "1"}  # type: ignore[list-item]
    assert headers_dict(42) == {}  # type: ignore[arg-type]


def test_content_types_and_constants() -> None:
    assert set(CONTENT_TYPES) == {
        "application/json",
        "image/png",
        "image/jpeg",
        "application/x-npy",
    }
    assert DEFAULT_MAX_PIXELS == 4096 * 4096
    assert DEFAULT_MAX_MESSAGE_BYTES == 1_048_576
