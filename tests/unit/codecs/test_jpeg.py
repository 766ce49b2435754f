"""JPEG decoding: simplejpeg (libjpeg-turbo) when installed, PIL otherwise; the same pixels
and the same errors either way."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from stream.codecs import DEFAULT_MAX_PIXELS, decode_image, encode_jpeg, encode_png, images
from stream.exceptions import DecodeError

RNG = np.random.default_rng(11)
JPEG_HEADERS = {"content-type": "image/jpeg"}


def photo(h: int, w: int) -> np.ndarray:
    """Gradients plus noise: chroma varies, so subsampling and upsampling matter."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack(
        [x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), (x + y) * 127 / max(h + w - 2, 1)],
        axis=2,
    )
    return np.clip(base + RNG.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def pil_jpeg(im: Image.Image, **options: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", **options)
    return buf.getvalue()


def _turbo(colorsubsampling: str) -> Callable[[], bytes]:
    def make() -> bytes:
        sj = pytest.importorskip("simplejpeg")
        pixels = photo(33, 97)
        return bytes(sj.encode_jpeg(pixels, quality=85, colorsubsampling=colorsubsampling))

    return make


RGB_97x33 = Image.fromarray(photo(33, 97))
#: name -> (JPEG bytes factory, decoded channels).
JPEGS: dict[str, tuple[Callable[[], bytes], int]] = {
    "rgb-420-96x96-q90": (lambda: pil_jpeg(Image.fromarray(photo(96, 96)), quality=90), 3),
    "rgb-420-97x33": (lambda: pil_jpeg(RGB_97x33), 3),
    "rgb-444-97x33": (lambda: pil_jpeg(RGB_97x33, subsampling=0), 3),
    "rgb-422-97x33": (lambda: pil_jpeg(RGB_97x33, subsampling=1), 3),
    "rgb-progressive": (lambda: pil_jpeg(RGB_97x33, progressive=True, quality=75), 3),
    "rgb-optimized-q50": (lambda: pil_jpeg(RGB_97x33, optimize=True, quality=50), 3),
    "rgb-restart-markers": (lambda: pil_jpeg(RGB_97x33, restart_marker_blocks=2), 3),
    "rgb-colorspace-rgb": (lambda: pil_jpeg(RGB_97x33, keep_rgb=True), 3),
    "rgb-exif-icc": (
        lambda: pil_jpeg(RGB_97x33, exif=Image.Exif().tobytes(), icc_profile=b"\0" * 300),
        3,
    ),
    "rgb-1x1": (lambda: pil_jpeg(Image.fromarray(photo(1, 1))), 3),
    "rgb-17x5": (lambda: pil_jpeg(Image.fromarray(photo(5, 17)), quality=95), 3),
    "gray-97x33": (lambda: pil_jpeg(RGB_97x33.convert("L")), 1),
    "gray-progressive": (lambda: pil_jpeg(RGB_97x33.convert("L"), progressive=True), 1),
    "cmyk": (lambda: pil_jpeg(RGB_97x33.convert("CMYK")), 3),
    "turbo-440": (_turbo("440"), 3),
    "turbo-411": (_turbo("411"), 3),
}


@pytest.fixture
def without_simplejpeg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "_simplejpeg", None)


@pytest.fixture
def simplejpeg() -> ModuleType:
    module = pytest.importorskip("simplejpeg")
    loaded = images._simplejpeg
    assert loaded is module
    return loaded


@pytest.fixture(params=["simplejpeg", "pil"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the test on each decoder path."""
    if request.param == "simplejpeg":
        request.getfixturevalue("simplejpeg")
    else:
        monkeypatch.setattr(images, "_simplejpeg", None)
    yield request.param


def decode_both(data: bytes, **kwargs: int) -> tuple[np.ndarray, np.ndarray]:
    fast = decode_image(data, JPEG_HEADERS, **kwargs).pixels
    saved = images._simplejpeg
    images._simplejpeg = None
    try:
        slow = decode_image(data, JPEG_HEADERS, **kwargs).pixels
    finally:
        images._simplejpeg = saved
    return fast, slow


def error_of(data: bytes, **kwargs: int) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode_image(data, JPEG_HEADERS, **kwargs)
    return info.value


# ----------------------------------------------------------------------- pixels


@pytest.mark.parametrize("name", sorted(JPEGS))
def test_simplejpeg_and_pil_give_identical_pixels(name: str, simplejpeg: ModuleType) -> None:
    # Both are libjpeg-turbo (PIL's own copy, simplejpeg's own copy) with the same
    # settings (accurate integer DCT, fancy upsampling): the pixels match bit for bit.
    make, channels = JPEGS[name]
    data = make()
    fast, slow = decode_both(data)
    assert fast.shape == slow.shape
    assert fast.shape[2] == channels
    np.testing.assert_array_equal(fast, slow)
    for pixels in (fast, slow):
        assert pixels.dtype == np.uint8
        assert pixels.flags.c_contiguous and pixels.flags.writeable


def test_simplejpeg_decodes_rgb_and_gray_without_pil(
    simplejpeg: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pil(*args: object) -> np.ndarray:
        raise AssertionError("PIL was used for a JPEG simplejpeg decodes")

    monkeypatch.setattr(images, "_decode_pil", no_pil)
    for name in ("rgb-420-97x33", "rgb-progressive", "gray-97x33", "rgb-colorspace-rgb"):
        make, channels = JPEGS[name]
        assert decode_image(make(), JPEG_HEADERS).pixels.shape[2] == channels
    # PNG is still PIL's.
    with pytest.raises(AssertionError, match="PIL was used"):
        decode_image(encode_png(np.zeros((2, 2), np.uint8)))


def test_cmyk_goes_to_pil(simplejpeg: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    data = JPEGS["cmyk"][0]()
    assert simplejpeg.decode_jpeg_header(data)[2] == "CMYK"
    calls: list[str] = []
    decode_pil = images._decode_pil

    def spy(data: bytes, ctype: str, max_pixels: int) -> np.ndarray:
        calls.append(ctype)
        return decode_pil(data, ctype, max_pixels)

    monkeypatch.setattr(images, "_decode_pil", spy)
    pixels = decode_image(data, JPEG_HEADERS).pixels
    assert calls == ["image/jpeg"]
    assert pixels.shape == (33, 97, 3)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(pixels, expected)


@pytest.mark.usefixtures("without_simplejpeg")
def test_pil_fallback_decodes_jpeg() -> None:
    pixels = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (24, 1))
    frame = decode_image(encode_jpeg(pixels, quality=95))
    assert frame.content_type == "image/jpeg"
    assert frame.pixels.shape == (24, 32, 1)
    assert np.abs(frame.pixels[:, :, 0].astype(int) - pixels.astype(int)).mean() < 3


def test_premature_end_of_scan_is_padded_on_both_paths(simplejpeg: ModuleType) -> None:
    # A start-of-frame that claims more pixels than the scan holds: libjpeg warns and pads.
    # simplejpeg (strict) refuses it, PIL decodes it as it always has.
    data = bytearray(encode_jpeg(photo(8, 8)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (50).to_bytes(2, "big") + (60).to_bytes(2, "big")
    with pytest.raises(ValueError):
        simplejpeg.decode_jpeg(bytes(data))
    fast, slow = decode_both(bytes(data))
    assert fast.shape == (50, 60, 3)
    np.testing.assert_array_equal(fast, slow)


# ----------------------------------------------------------------------- errors

GOOD = encode_jpeg(photo(40, 50))


def _flip_in_header(data: bytes) -> bytes:
    out = bytearray(data)
    sof = out.index(b"\xff\xc0")
    out[sof + 9] = 0  # number of components: 0
    return bytes(out)


CORRUPT = [
    pytest.param(GOOD[:40], "JPEG", id="truncated-header"),
    pytest.param(GOOD[: len(GOOD) // 2], "truncated", id="truncated-scan"),
    pytest.param(GOOD[:-2], "truncated", id="no-eoi"),
    pytest.param(b"\xff\xd8\xff" + b"\x00" * 64, "JPEG", id="junk-after-soi"),
    pytest.param(b"\xff\xd8\xff", "JPEG", id="magic-only"),
    pytest.param(_flip_in_header(GOOD), "JPEG", id="zero-components"),
    pytest.param(encode_png(photo(4, 4)), "say image/png", id="png-declared-jpeg"),
]


@pytest.mark.parametrize(("data", "fragment"), CORRUPT)
def test_corrupt_jpegs_are_corrupt_image_on_both_paths(
    data: bytes, fragment: str, path: str
) -> None:
    err = error_of(data)
    assert err.reason == "corrupt_image", str(err)
    assert fragment in err.message
    assert "check the encoder" in err.message


@pytest.mark.parametrize(("data", "fragment"), CORRUPT)
def test_corrupt_jpegs_fail_with_the_same_message_on_both_paths(
    data: bytes, fragment: str, simplejpeg: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = error_of(data)
    monkeypatch.setattr(images, "_simplejpeg", None)
    slow = error_of(data)
    assert (fast.reason, fast.message) == (slow.reason, slow.message)


def test_pixel_limit_on_both_paths(path: str) -> None:
    assert decode_image(GOOD, JPEG_HEADERS, max_pixels=2000).pixels.shape == (40, 50, 3)
    err = error_of(GOOD, max_pixels=1999)
    assert err.reason == "image_too_large"
    assert "50x40" in err.message and "max_pixels" in err.message


def test_pixel_limit_is_checked_before_simplejpeg_decodes(
    simplejpeg: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = bytearray(GOOD)
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (50000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    decoded: list[bytes] = []

    class Spy:
        decode_jpeg_header = staticmethod(simplejpeg.decode_jpeg_header)

        @staticmethod
        def decode_jpeg(data: bytes, **kwargs: object) -> np.ndarray:
            decoded.append(data)
            return np.asarray(simplejpeg.decode_jpeg(data, **kwargs))

    monkeypatch.setattr(images, "_simplejpeg", Spy)
    err = error_of(bytes(data))
    assert err.reason == "image_too_large"
    assert "60000x50000" in err.message and str(DEFAULT_MAX_PIXELS) in err.message
    assert decoded == []
    decode_image(GOOD, JPEG_HEADERS)
    assert decoded == [GOOD]
