"""Image codecs (PNG, JPEG, .npy): round trips, pixel budgets, and failures with their
reason and message."""

from __future__ import annotations

import io
import re
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from stream.codecs import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_PIXELS,
    decode_image,
    encode_jpeg,
    encode_npy,
    encode_png,
    image_headers,
)
from stream.exceptions import DecodeError
from stream.schemas import ImageFrame
from tests.unit.codecs.helpers import assert_meaningful

RNG = np.random.default_rng(7)


def image(h: int = 6, w: int = 5, c: int | None = 3) -> np.ndarray:
    shape = (h, w) if c is None else (h, w, c)
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


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
