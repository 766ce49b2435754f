"""Images: PNG, JPEG and raw ``.npy`` tensors, decoded within a pixel budget."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from types import ModuleType
from typing import NoReturn

import numpy as np
from PIL import Image, UnidentifiedImageError

from stream import topics
from stream.codecs.fields import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_DEVICE_ID_CHARS,
    as_bytes,
    check_size,
    fail,
    short,
)
from stream.codecs.headers import Headers, headers_dict, lower_keys, ts_header
from stream.content_types import (
    IMAGE_CONTENT_TYPE_ALIASES,
    IMAGE_CONTENT_TYPES,
    JPEG,
    NPY,
    PNG,
    ImageContentType,
)
from stream.exceptions import DecodeError
from stream.schemas import ImageFrame


def _optional_simplejpeg() -> ModuleType | None:
    try:
        import simplejpeg
    except ImportError:
        return None
    return simplejpeg


#: libjpeg-turbo through ``simplejpeg`` (in the ``agent`` extra): a 96x96 JPEG frame in
#: ~55 us against PIL's ~185 us (PIL parses the markers in Python and unpacks row by row).
#: None when it is not installed: PIL then decodes JPEG as well.
_simplejpeg = _optional_simplejpeg()

DEFAULT_MAX_PIXELS = 4096 * 4096
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
NPY_MAGIC = b"\x93NUMPY"


def _check_pixels(pixels: np.ndarray) -> np.ndarray:
    arr = np.asarray(pixels)
    if arr.dtype != np.uint8:
        msg = f"pixels must be uint8, got {arr.dtype}; convert with .astype(np.uint8)"
        raise ValueError(msg)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)) or 0 in arr.shape:
        msg = f"pixels must be shaped (H, W), (H, W, 1) or (H, W, 3), got {np.shape(pixels)}"
        raise ValueError(msg)
    return np.ascontiguousarray(arr)


def encode_png(pixels: np.ndarray) -> bytes:
    """Lossless PNG of uint8 pixels shaped (H, W), (H, W, 1) or (H, W, 3)."""
    buf = io.BytesIO()
    Image.fromarray(_check_pixels(pixels)).save(buf, format="PNG")
    return buf.getvalue()


def encode_jpeg(pixels: np.ndarray, quality: int = 90) -> bytes:
    """JPEG of uint8 pixels shaped (H, W), (H, W, 1) or (H, W, 3) (lossy)."""
    if not 1 <= quality <= 95:
        msg = f"quality must be in 1..95, got {quality}"
        raise ValueError(msg)
    buf = io.BytesIO()
    Image.fromarray(_check_pixels(pixels)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def encode_npy(pixels: np.ndarray) -> bytes:
    """Raw ``.npy`` of uint8 pixels shaped (H, W), (H, W, 1) or (H, W, 3) (kept as given)."""
    arr = np.asarray(pixels)
    _check_pixels(arr)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def sniff_content_type(data: bytes) -> ImageContentType | None:
    """The content type told by the magic bytes (PNG, JPEG, NPY), or None."""
    if data.startswith(PNG_MAGIC):
        return PNG
    if data.startswith(JPEG_MAGIC):
        return JPEG
    if data.startswith(NPY_MAGIC):
        return NPY
    return None


#: Every accepted spelling of an image content type, mapped to the canonical one.
_IMAGE_TYPE_SPELLINGS: dict[str, ImageContentType] = {
    **{t: t for t in IMAGE_CONTENT_TYPES},
    **IMAGE_CONTENT_TYPE_ALIASES,
}


def _image_content_type(declared: str | None, data: bytes) -> ImageContentType:
    if declared is not None and declared.strip():
        ctype = _IMAGE_TYPE_SPELLINGS.get(declared.split(";", 1)[0].strip().lower())
        if ctype is None:
            fail(
                "unknown_content_type",
                f"content-type header {short(declared, 80)!r} is not an image type; use "
                f"one of {', '.join(IMAGE_CONTENT_TYPES)} "
                "(or send sensor JSON to the sensors topic)",
            )
        return ctype
    sniffed = sniff_content_type(data)
    if sniffed is None:
        fail(
            "unknown_content_type",
            "the image message has no content-type header and its bytes are not PNG, JPEG "
            f"or .npy (first bytes {data[:8].hex() or 'none'}); set the content-type header",
        )
    return sniffed


def decode_image(
    value: bytes | None,
    headers: Headers | Mapping[str, bytes | str] | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ImageFrame:
    """Decode a PNG/JPEG/.npy message into uint8 pixels shaped (H, W, 1|3)."""
    what = "image"
    data = as_bytes(value, what)
    check_size(data, max_bytes, what)
    hdrs = lower_keys(headers_dict(headers))
    ctype = _image_content_type(hdrs.get(topics.H_CONTENT_TYPE), data)
    device_id = hdrs.get(topics.H_DEVICE_ID) or None
    if device_id is not None and len(device_id) > MAX_DEVICE_ID_CHARS:
        fail(
            "bad_header",
            f"device-id header has {len(device_id)} characters, over the limit of "
            f"{MAX_DEVICE_ID_CHARS}",
        )
    ts = ts_header(hdrs.get(topics.H_TS))
    if ctype == NPY:
        pixels = _decode_npy(data, max_pixels)
    elif ctype == JPEG:
        pixels = _decode_jpeg(data, max_pixels)
    else:
        pixels = _decode_pil(data, ctype, max_pixels)
    return ImageFrame(device_id=device_id, ts=ts, content_type=ctype, pixels=pixels)


def _too_many_pixels(width: int, height: int, max_pixels: int) -> NoReturn:
    fail(
        "image_too_large",
        f"the image is {width}x{height} = {width * height} pixels, over the limit of "
        f"{max_pixels}; resize it on the device or raise max_pixels",
    )


_PIL_FORMATS = {PNG: "PNG", JPEG: "JPEG"}
#: JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the IHDR chunk, which the PNG spec puts first."""
    if len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first start-of-frame segment, by walking the markers."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _JPEG_SOF:
            if i + 9 > n:
                return None
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height
        if length < 2:
            return None
        i += 2 + length
    return None


#: JPEG colour spaces (as ``simplejpeg.decode_jpeg_header`` names them) that simplejpeg
#: decodes exactly as PIL does, and the colour space to ask for. CMYK and YCCK go to PIL
#: (it undoes Adobe's inverted CMYK and converts to RGB its own way).
_SIMPLEJPEG_COLORSPACES = {"YCbCr": "RGB", "RGB": "RGB", "Gray": "GRAY"}


def _decode_jpeg(data: bytes, max_pixels: int) -> np.ndarray:
    """JPEG pixels via simplejpeg when it can decode them cleanly, else via PIL.

    simplejpeg runs strict: a libjpeg warning (data ending early, a corrupt segment) is a
    ``ValueError``. Anything it refuses goes to PIL, which decides as it always has (it
    pads a scan that ends early, and names the error of truly broken bytes), so errors
    and messages do not depend on whether simplejpeg is installed.
    """
    sj = _simplejpeg
    if sj is not None:
        try:
            height, width, colorspace, _ = sj.decode_jpeg_header(data)
        except ValueError:
            pass
        else:
            # The size told by the header, checked before any pixel is decoded.
            if width * height > max_pixels:
                _too_many_pixels(width, height, max_pixels)
            target = _SIMPLEJPEG_COLORSPACES.get(colorspace)
            if target is not None:
                try:
                    pixels: np.ndarray = sj.decode_jpeg(data, colorspace=target)
                except ValueError:
                    pass
                else:
                    return pixels  # uint8 (H, W, 3|1), C-contiguous, writable (a new array)
    return _decode_pil(data, JPEG, max_pixels)


def _decode_pil(data: bytes, ctype: str, max_pixels: int) -> np.ndarray:
    fmt = _PIL_FORMATS[ctype]
    # Check the size told by the header before PIL sees the bytes (PIL's own bomb guard
    # only starts at ~89 Mpixels, and would warn first).
    size = _png_size(data) if ctype == PNG else _jpeg_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        _too_many_pixels(size[0], size[1], max_pixels)
    try:
        # Image.open reads only the header; the pixel limit is checked before load().
        im = Image.open(io.BytesIO(data), formats=[fmt])
        width, height = im.size
        if width <= 0 or height <= 0:
            fail("corrupt_image", f"the {fmt} image has size {width}x{height}")
        if width * height > max_pixels:
            _too_many_pixels(width, height, max_pixels)
        im.load()
        return _to_array(im)
    except DecodeError:
        raise
    except UnidentifiedImageError:
        actual = sniff_content_type(data)
        told = f"its magic bytes say {actual}" if actual else "its magic bytes match no format"
        fail(
            "corrupt_image",
            f"the bytes are not a {fmt} image ({told}); check the encoder and make the "
            "content-type header match the bytes",
        )
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        fail(
            "image_too_large",
            f"the image is too large to decode safely ({short(str(exc))}); resize it",
        )
    except Exception as exc:  # noqa: BLE001  PIL raises many types on corrupt input
        fail(
            "corrupt_image",
            f"the bytes are not a valid {fmt} image ({type(exc).__name__}: "
            f"{short(str(exc))}); check the encoder and the content-type header",
        )


def _to_array(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr16 = np.asarray(im).astype(np.int64)
        gray = (np.clip(arr16, 0, 65535) >> 8).astype(np.uint8)
        return np.ascontiguousarray(gray[:, :, None])
    if mode == "F":
        f = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0)
        gray = np.clip(np.rint(f), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(gray[:, :, None])
    if mode in ("1", "L", "LA", "La"):
        im = im.convert("L")
    elif mode != "RGB":
        im = im.convert("RGB")
    arr = np.asarray(im, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if not arr.flags.writeable or not arr.flags.c_contiguous:
        arr = np.array(arr, order="C")
    return arr


def _decode_npy(data: bytes, max_pixels: int) -> np.ndarray:
    fmt = np.lib.format
    fp = io.BytesIO(data)
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fp)
        else:
            fail(
                "corrupt_image",
                f".npy format version {version} is not supported; save with np.save "
                "(format 1.0 or 2.0)",
            )
    except DecodeError:
        raise
    except Exception as exc:  # noqa: BLE001  numpy's header parser raises many types
        fail(
            "corrupt_image",
            f"the bytes are not a valid .npy array ({type(exc).__name__}: "
            f"{short(str(exc))}); save the array with np.save(allow_pickle=False)",
        )
    if dtype != np.dtype(np.uint8):
        fail(
            "wrong_dtype",
            f"the .npy array has dtype {short(str(dtype), 80)}, expected uint8; send "
            "pixels as uint8 0..255 (arr.astype(np.uint8))",
        )
    ok_shape = (
        len(shape) in (2, 3)
        and all(isinstance(d, int) and d > 0 for d in shape)
        and (len(shape) == 2 or shape[2] in (1, 3))
    )
    if not ok_shape:
        fail(
            "wrong_shape",
            f"the .npy array has shape {short(str(shape), 80)}, expected (H, W), (H, W, 1) "
            "or (H, W, 3)",
        )
    height, width = shape[0], shape[1]
    if height * width > max_pixels:
        _too_many_pixels(width, height, max_pixels)
    count = math.prod(shape)
    offset = fp.tell()
    if len(data) - offset != count:
        fail(
            "corrupt_image",
            f"the .npy header announces {count} bytes of data but {len(data) - offset} "
            "follow; the message was truncated or altered",
        )
    arr = np.frombuffer(data, dtype=np.uint8, count=count, offset=offset)
    arr = arr.reshape(shape, order="F" if fortran else "C")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.array(arr, order="C")
