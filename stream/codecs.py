"""Codecs of wire contract v1: bytes <-> :mod:`stream.schemas` (docs/wire-format.md).

Encoders take trusted values from our own code and raise ``ValueError``/``TypeError`` on a
programming mistake. Decoders take untrusted bytes from the network and raise only
:class:`~stream.exceptions.DecodeError`, whose ``reason`` is one of
``DecodeError.REASONS`` and whose message says what was wrong and how to fix it.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from types import ModuleType
from typing import Any, NoReturn

import numpy as np
from PIL import Image, UnidentifiedImageError

from stream import topics
from stream.exceptions import DecodeError
from stream.schemas import CONTENT_TYPES, DeadLetter, ImageFrame, InferenceResult, SensorChunk

logger = logging.getLogger(__name__)


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

Headers = list[tuple[str, bytes]]

DEFAULT_MAX_MESSAGE_BYTES = 1_048_576
DEFAULT_MAX_PIXELS = 4096 * 4096
DEFAULT_MAX_SAMPLES = 10_000
DEFAULT_MAX_CHANNELS = 1024
#: Longest accepted device id (characters).
MAX_DEVICE_ID_CHARS = 256
#: Dead-letter ``error-message`` headers are cut to this many characters.
MAX_ERROR_MESSAGE_CHARS = 1000
#: Timestamps are epoch milliseconds that fit a signed 64-bit integer.
_MAX_TS = 2**63 - 1

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
NPY_MAGIC = b"\x93NUMPY"

_JSON = "application/json"
_PNG = "image/png"
_JPEG = "image/jpeg"
_NPY = "application/x-npy"
_IMAGE_TYPES = (_PNG, _JPEG, _NPY)
#: Spellings seen in the wild, mapped to the canonical content type.
_CONTENT_TYPE_ALIASES = {
    "image/jpg": _JPEG,
    "image/pjpeg": _JPEG,
    "image/x-png": _PNG,
    "application/npy": _NPY,
    "application/x-numpy": _NPY,
}
_DEAD_LETTER_HEADERS = (
    topics.H_ERROR_TYPE,
    topics.H_ERROR_MESSAGE,
    topics.H_SOURCE_TOPIC,
    topics.H_SOURCE_PARTITION,
    topics.H_SOURCE_OFFSET,
    topics.H_AGENT_ID,
)


# ----------------------------------------------------------------------------- helpers


class _NonFiniteConstant(Exception):
    """Raised by ``parse_constant`` when the JSON holds NaN/Infinity."""


def _reject_constant(name: str) -> NoReturn:
    raise _NonFiniteConstant(name)


#: Built once: ``json.loads`` with a hook builds a new decoder per call (~3 us).
_JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
#: Magnitudes below this round to a finite float32 (max + half an ulp).
_FLOAT32_LIMIT = float(np.finfo(np.float32).max) + 2.0**103


def _fail(reason: str, message: str) -> NoReturn:
    raise DecodeError(reason, message)


def _as_bytes(value: object, what: str) -> bytes:
    if value is None:
        _fail(
            "missing_field",
            f"the {what} message has no value (a tombstone?); send the payload as the "
            "message value",
        )
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    _fail(
        "wrong_type",
        f"the {what} message value must be bytes, got {type(value).__name__}; configure "
        "the consumer without a value deserializer",
    )


def _check_size(data: bytes, max_bytes: int, what: str) -> None:
    if len(data) > max_bytes:
        _fail(
            "too_large",
            f"the {what} message is {len(data)} bytes, over the limit of {max_bytes}; send "
            "smaller messages (fewer samples per chunk, smaller images) or raise max_bytes",
        )


def _load_json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        _fail(
            "not_json",
            f"the {what} message is not UTF-8 text ({exc.reason} at byte {exc.start}); "
            "encode it as UTF-8 JSON",
        )
    try:
        obj = _JSON_DECODER.decode(text)
    except _NonFiniteConstant as exc:
        _fail(
            "non_finite",
            f"the {what} message holds {exc.args[0]}, which is not valid JSON; send only "
            "finite numbers (drop or interpolate missing readings)",
        )
    except RecursionError:
        _fail("not_json", f"the {what} message nests JSON too deeply; send a flat object")
    except ValueError as exc:  # JSONDecodeError, and ints over the digit limit
        _fail(
            "not_json",
            f"the {what} message is not valid JSON ({_short(str(exc))}); send a UTF-8 JSON "
            "object as documented in docs/wire-format.md",
        )
    if not isinstance(obj, dict):
        _fail(
            "wrong_type",
            f"the {what} message must be a JSON object, got a JSON {_json_type(obj)}; "
            "wrap the fields in {...}",
        )
    return obj


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(obj: object) -> str:
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "boolean"
    if isinstance(obj, int | float):
        return "number"
    if isinstance(obj, str):
        return "string"
    if isinstance(obj, list):
        return "array"
    if isinstance(obj, dict):
        return "object"
    return type(obj).__name__


def _require(obj: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in obj:
        _fail(
            "missing_field",
            f"the {what} message lacks the field {key!r}; add it (see docs/wire-format.md)",
        )
    return obj[key]


def _str_field(obj: Mapping[str, Any], key: str, what: str, *, optional: bool = False) -> Any:
    if optional and obj.get(key) is None:
        return None
    value = _require(obj, key, what)
    if not isinstance(value, str):
        _fail(
            "wrong_type",
            f"field {key!r} of the {what} message must be a string, got a JSON {_json_type(value)}",
        )
    return value


def _device_id(obj: Mapping[str, Any], what: str) -> str:
    value = _str_field(obj, "device_id", what)
    if not value:
        _fail("missing_field", f"field 'device_id' of the {what} message is empty; set it")
    if len(value) > MAX_DEVICE_ID_CHARS:
        _fail(
            "too_large",
            f"field 'device_id' of the {what} message has {len(value)} characters, over "
            f"the limit of {MAX_DEVICE_ID_CHARS}; use a shorter id",
        )
    return value


def _int_field(
    obj: Mapping[str, Any], key: str, what: str, *, optional: bool = False
) -> int | None:
    if optional and obj.get(key) is None:
        return None
    value = _require(obj, key, what)
    unit = " of epoch milliseconds" if key in ("ts", "produced_at") else ""
    if not isinstance(value, int) or isinstance(value, bool):
        _fail(
            "wrong_type",
            f"field {key!r} of the {what} message must be an integer{unit}, got a JSON "
            f"{_json_type(value)}",
        )
    if not 0 <= value <= _MAX_TS:
        _fail(
            "wrong_type",
            f"field {key!r} of the {what} message must be an integer in [0, 2**63), got "
            f"{_short(str(value), 40)}",
        )
    return value


def _ts_field(obj: Mapping[str, Any], what: str) -> int:
    ts = _int_field(obj, "ts", what)
    assert ts is not None  # noqa: S101 (not optional)
    return ts


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ------------------------------------------------------------------------ headers


def headers_dict(headers: Headers | Mapping[Any, Any] | None) -> dict[str, str]:
    """Kafka headers (list of pairs or mapping) as ``{name: text}``; never raises.

    Undecodable bytes become replacement characters, ``None`` values ``""``; when a name
    repeats, the last value wins. Malformed entries are skipped.
    """
    out: dict[str, str] = {}
    if not headers:
        return out
    try:
        items: Iterable[Any] = headers.items() if isinstance(headers, Mapping) else headers
        for item in items:
            try:
                name, value = item
            except (TypeError, ValueError):
                continue
            out[_text(name)] = _text(value)
    except TypeError:
        return out
    return out


def _text(value: object) -> str:
    # The common cases first (header values are bytes, names str): ~3x faster.
    if type(value) is bytes:
        return value.decode("utf-8", errors="replace")
    if type(value) is str:
        return value
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _lower_keys(headers: dict[str, str]) -> dict[str, str]:
    return {k.strip().lower(): v for k, v in headers.items()}


def _h(value: object) -> bytes:
    return str(value).encode("utf-8")


def sensor_headers(device_id: str, ts: int, label: str | None = None) -> Headers:
    """Headers of a sensor message: content type, device id, ts and (optional) true label."""
    out: Headers = [
        (topics.H_CONTENT_TYPE, _JSON.encode()),
        (topics.H_DEVICE_ID, _h(device_id)),
        (topics.H_TS, _h(int(ts))),
    ]
    if label is not None:
        out.append((topics.H_LABEL, _h(label)))
    return out


def image_headers(
    content_type: str, device_id: str | None, ts: int | None, label: str | None = None
) -> Headers:
    """Headers of an image message; ``device-id``/``ts``/``label`` only when given."""
    if content_type not in _IMAGE_TYPES:
        msg = f"content_type must be one of {', '.join(_IMAGE_TYPES)}, got {content_type!r}"
        raise ValueError(msg)
    out: Headers = [(topics.H_CONTENT_TYPE, content_type.encode())]
    if device_id is not None:
        out.append((topics.H_DEVICE_ID, _h(device_id)))
    if ts is not None:
        out.append((topics.H_TS, _h(int(ts))))
    if label is not None:
        out.append((topics.H_LABEL, _h(label)))
    return out


# ------------------------------------------------------------------------- sensors


def _float32_json(arr: np.ndarray) -> str:
    """JSON array text of a float32 array with the shortest repr that round-trips."""
    if arr.ndim == 1:
        return "[" + ",".join(arr.astype(str).tolist()) + "]"
    return "[" + ",".join(_float32_json(row) for row in arr) + "]"


def _encoder_array(values: object, name: str, ndim: int) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        msg = f"{name} must be numbers, got {type(values).__name__}: {exc}"
        raise ValueError(msg) from exc
    if arr.ndim != ndim or 0 in arr.shape:
        shape = "(channels,)" if ndim == 1 else "(n, channels)"
        msg = f"{name} must be a non-empty array shaped {shape}, got shape {arr.shape}"
        raise ValueError(msg)
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(np.float32)
    if not np.isfinite(out).all():
        msg = f"{name} holds NaN, Infinity or values outside the float32 range"
        raise ValueError(msg)
    return out


def _check_device_ts(device_id: str, ts: int) -> None:
    if not isinstance(device_id, str) or not 0 < len(device_id) <= MAX_DEVICE_ID_CHARS:
        msg = f"device_id must be a non-empty str of at most {MAX_DEVICE_ID_CHARS} characters"
        raise ValueError(msg)
    if isinstance(ts, bool) or not isinstance(ts, int | np.integer) or not 0 <= ts <= _MAX_TS:
        msg = f"ts must be an int of epoch milliseconds >= 0, got {ts!r}"
        raise ValueError(msg)


def encode_reading(device_id: str, ts: int, values: Sequence[float]) -> bytes:
    """One reading: ``{"device_id", "ts", "values": [one float per channel]}``."""
    _check_device_ts(device_id, ts)
    arr = _encoder_array(values, "values", 1)
    head = json.dumps({"device_id": device_id, "ts": int(ts)}, separators=(",", ":"))
    return f'{head[:-1]},"values":{_float32_json(arr)}}}'.encode()


def encode_chunk(device_id: str, ts: int, samples: object) -> bytes:
    """Consecutive readings: ``{"device_id", "ts", "samples": [[...], ...]}`` (n, channels)."""
    _check_device_ts(device_id, ts)
    arr = _encoder_array(samples, "samples", 2)
    head = json.dumps({"device_id": device_id, "ts": int(ts)}, separators=(",", ":"))
    return f'{head[:-1]},"samples":{_float32_json(arr)}}}'.encode()


def decode_sensor(
    value: bytes | None,
    *,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    channels: int | None = None,
    max_channels: int = DEFAULT_MAX_CHANNELS,
) -> SensorChunk:
    """Decode a reading or a chunk into float32 samples shaped (n, channels)."""
    what = "sensor"
    data = _as_bytes(value, what)
    _check_size(data, max_bytes, what)
    obj = _load_json_object(data, what)
    device_id = _device_id(obj, what)
    ts = _ts_field(obj, what)
    if "samples" in obj and "values" in obj:
        _fail(
            "wrong_shape",
            "the sensor message has both 'values' and 'samples'; send one reading as "
            "'values' or a chunk as 'samples'",
        )
    if "samples" in obj:
        field_name = "samples"
        rows = obj["samples"]
        if not isinstance(rows, list) or not rows:
            _fail(
                "wrong_shape" if isinstance(rows, list) else "wrong_type",
                "field 'samples' must be a non-empty array of readings [[c1, c2, ...], ...], "
                f"got {_describe(rows)}",
            )
        if len(rows) > max_samples:
            _fail(
                "too_large",
                f"field 'samples' holds {len(rows)} readings, over the limit of "
                f"{max_samples}; split the chunk",
            )
        if not all(type(r) is list for r in rows):
            _fail(
                "wrong_type",
                "every element of 'samples' must be an array of numbers, one per channel",
            )
        lengths = {len(r) for r in rows}
        if len(lengths) != 1:
            _fail(
                "wrong_shape",
                "the readings in 'samples' have different channel counts "
                f"{sorted(lengths)[:5]}; every reading needs one number per channel",
            )
    elif "values" in obj:
        field_name = "values"
        row = obj["values"]
        if not isinstance(row, list):
            _fail(
                "wrong_type",
                f"field 'values' must be an array of numbers, got {_describe(row)}",
            )
        rows = [row]
    else:
        _fail(
            "missing_field",
            "the sensor message has neither 'values' (one reading) nor 'samples' (a chunk); "
            "add one of them",
        )
    width = len(rows[0])
    if width == 0:
        _fail(
            "wrong_shape",
            f"field {field_name!r} holds an empty reading; send one number per channel",
        )
    if width > max_channels:
        _fail(
            "too_large",
            f"field {field_name!r} has {width} channels, over the limit of {max_channels}",
        )
    samples = _numeric_rows(rows, field_name, data)
    if channels is not None and samples.shape[1] != channels:
        _fail(
            "wrong_shape",
            f"the sensor message has {samples.shape[1]} channel(s) but the model expects "
            f"{channels}; send {channels} numbers per reading",
        )
    return SensorChunk(device_id=device_id, ts=ts, samples=samples)


def _describe(value: object) -> str:
    if isinstance(value, list):
        return f"an array of {len(value)} element(s)"
    return f"a JSON {_json_type(value)}"


def _bad_numbers(field_name: str) -> str:
    return (
        f"field {field_name!r} must hold only numbers (no strings, booleans, nulls or "
        "nested arrays)"
    )


def _numeric_rows(rows: list[Any], field_name: str, raw: bytes) -> np.ndarray:
    """A list of equal-length lists -> float32 (n, channels), checked without Python loops
    over elements where numpy can do it."""
    try:
        arr = np.array(rows)
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError):
        _fail("wrong_type", _bad_numbers(field_name))
    if arr.dtype.kind == "O" and arr.ndim == 2:
        # Rare slow path: ints beyond int64 (or junk) make numpy fall back to objects.
        if not all(_number(v) for row in rows for v in row):
            _fail("wrong_type", _bad_numbers(field_name))
        try:
            arr = np.array([[float(v) for v in row] for row in rows], dtype=np.float64)
        except OverflowError:
            arr = np.array([np.inf])
    elif arr.ndim != 2 or arr.dtype.kind not in "iuf":
        _fail("wrong_type", _bad_numbers(field_name))
    # numpy silently turns true/false into 1/0 when mixed with numbers; JSON booleans
    # only exist where the raw text spells them, so the exact check runs only then.
    if (b"true" in raw or b"false" in raw) and any(type(v) is bool for row in rows for v in row):
        _fail("wrong_type", _bad_numbers(field_name))
    # NaN compares False, so this one vectorised test also rejects NaN and Infinity.
    if arr.dtype.kind == "f" and not (np.abs(arr) < _FLOAT32_LIMIT).all():
        _fail(
            "non_finite",
            f"field {field_name!r} holds a value outside the float32 range (+-3.4e38); "
            "send finite numbers",
        )
    return np.ascontiguousarray(arr, dtype=np.float32)


# -------------------------------------------------------------------------- images


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


def sniff_content_type(data: bytes) -> str | None:
    """The content type told by the magic bytes (PNG, JPEG, NPY), or None."""
    if data.startswith(PNG_MAGIC):
        return _PNG
    if data.startswith(JPEG_MAGIC):
        return _JPEG
    if data.startswith(NPY_MAGIC):
        return _NPY
    return None


def _content_type(declared: str | None, data: bytes) -> str:
    if declared is not None and declared.strip():
        ctype = declared.split(";", 1)[0].strip().lower()
        ctype = _CONTENT_TYPE_ALIASES.get(ctype, ctype)
        if ctype not in _IMAGE_TYPES:
            _fail(
                "unknown_content_type",
                f"content-type header {_short(declared, 80)!r} is not an image type; use "
                f"one of {', '.join(_IMAGE_TYPES)} (or send sensor JSON to the sensors topic)",
            )
        return ctype
    sniffed = sniff_content_type(data)
    if sniffed is None:
        _fail(
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
    data = _as_bytes(value, what)
    _check_size(data, max_bytes, what)
    hdrs = _lower_keys(headers_dict(headers))
    ctype = _content_type(hdrs.get(topics.H_CONTENT_TYPE), data)
    device_id = hdrs.get(topics.H_DEVICE_ID) or None
    if device_id is not None and len(device_id) > MAX_DEVICE_ID_CHARS:
        _fail(
            "bad_header",
            f"device-id header has {len(device_id)} characters, over the limit of "
            f"{MAX_DEVICE_ID_CHARS}",
        )
    ts = _ts_header(hdrs.get(topics.H_TS))
    if ctype == _NPY:
        pixels = _decode_npy(data, max_pixels)
    elif ctype == _JPEG:
        pixels = _decode_jpeg(data, max_pixels)
    else:
        pixels = _decode_pil(data, ctype, max_pixels)
    return ImageFrame(device_id=device_id, ts=ts, content_type=ctype, pixels=pixels)


def _ts_header(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    t = text.strip()
    if not (t.isascii() and t.isdigit() and len(t) <= 19) or int(t) > _MAX_TS:
        _fail(
            "bad_header",
            f"ts header {_short(text, 40)!r} is not epoch milliseconds; send a decimal "
            "integer such as 1718000000000",
        )
    return int(t)


def _too_many_pixels(width: int, height: int, max_pixels: int) -> NoReturn:
    _fail(
        "image_too_large",
        f"the image is {width}x{height} = {width * height} pixels, over the limit of "
        f"{max_pixels}; resize it on the device or raise max_pixels",
    )


_PIL_FORMATS = {_PNG: "PNG", _JPEG: "JPEG"}
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
    return _decode_pil(data, _JPEG, max_pixels)


def _decode_pil(data: bytes, ctype: str, max_pixels: int) -> np.ndarray:
    fmt = _PIL_FORMATS[ctype]
    # Check the size told by the header before PIL sees the bytes (PIL's own bomb guard
    # only starts at ~89 Mpixels, and would warn first).
    size = _png_size(data) if ctype == _PNG else _jpeg_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        _too_many_pixels(size[0], size[1], max_pixels)
    try:
        # Image.open reads only the header; the pixel limit is checked before load().
        im = Image.open(io.BytesIO(data), formats=[fmt])
        width, height = im.size
        if width <= 0 or height <= 0:
            _fail("corrupt_image", f"the {fmt} image has size {width}x{height}")
        if width * height > max_pixels:
            _too_many_pixels(width, height, max_pixels)
        im.load()
        return _to_array(im)
    except DecodeError:
        raise
    except UnidentifiedImageError:
        actual = sniff_content_type(data)
        told = f"its magic bytes say {actual}" if actual else "its magic bytes match no format"
        _fail(
            "corrupt_image",
            f"the bytes are not a {fmt} image ({told}); check the encoder and make the "
            "content-type header match the bytes",
        )
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        _fail(
            "image_too_large",
            f"the image is too large to decode safely ({_short(str(exc))}); resize it",
        )
    except Exception as exc:  # noqa: BLE001  PIL raises many types on corrupt input
        _fail(
            "corrupt_image",
            f"the bytes are not a valid {fmt} image ({type(exc).__name__}: "
            f"{_short(str(exc))}); check the encoder and the content-type header",
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
            _fail(
                "corrupt_image",
                f".npy format version {version} is not supported; save with np.save "
                "(format 1.0 or 2.0)",
            )
    except DecodeError:
        raise
    except Exception as exc:  # noqa: BLE001  numpy's header parser raises many types
        _fail(
            "corrupt_image",
            f"the bytes are not a valid .npy array ({type(exc).__name__}: "
            f"{_short(str(exc))}); save the array with np.save(allow_pickle=False)",
        )
    if dtype != np.dtype(np.uint8):
        _fail(
            "wrong_dtype",
            f"the .npy array has dtype {_short(str(dtype), 80)}, expected uint8; send "
            "pixels as uint8 0..255 (arr.astype(np.uint8))",
        )
    ok_shape = (
        len(shape) in (2, 3)
        and all(isinstance(d, int) and d > 0 for d in shape)
        and (len(shape) == 2 or shape[2] in (1, 3))
    )
    if not ok_shape:
        _fail(
            "wrong_shape",
            f"the .npy array has shape {_short(str(shape), 80)}, expected (H, W), (H, W, 1) "
            "or (H, W, 3)",
        )
    height, width = shape[0], shape[1]
    if height * width > max_pixels:
        _too_many_pixels(width, height, max_pixels)
    count = math.prod(shape)
    offset = fp.tell()
    if len(data) - offset != count:
        _fail(
            "corrupt_image",
            f"the .npy header announces {count} bytes of data but {len(data) - offset} "
            "follow; the message was truncated or altered",
        )
    arr = np.frombuffer(data, dtype=np.uint8, count=count, offset=offset)
    arr = arr.reshape(shape, order="F" if fortran else "C")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.array(arr, order="C")


# ------------------------------------------------------------------------- results


def encode_result(r: InferenceResult) -> bytes:
    """A result as compact JSON (the dataclass fields as keys). NaN is refused."""
    try:
        return json.dumps(asdict(r), separators=(",", ":"), allow_nan=False).encode()
    except ValueError as exc:
        msg = f"result for device {r.device_id!r} holds NaN or Infinity: {exc}"
        raise ValueError(msg) from exc


def _float_field(obj: Mapping[str, Any], key: str, what: str) -> float:
    value = _require(obj, key, what)
    if not _number(value):
        _fail(
            "wrong_type",
            f"field {key!r} of the {what} message must be a number, got a JSON {_json_type(value)}",
        )
    try:
        out = float(value)
    except OverflowError:
        out = math.inf
    if not math.isfinite(out):
        _fail("non_finite", f"field {key!r} of the {what} message is not a finite number")
    return out


def _dict_field(obj: Mapping[str, Any], key: str, what: str, *, optional: bool = False) -> Any:
    if optional and obj.get(key) is None:
        return {}
    value = _require(obj, key, what)
    if not isinstance(value, dict):
        _fail(
            "wrong_type",
            f"field {key!r} of the {what} message must be an object, got a JSON "
            f"{_json_type(value)}",
        )
    return value


def _number_map(obj: Mapping[str, Any], key: str, what: str) -> dict[str, float]:
    mapping = _dict_field(obj, key, what)
    return {k: _float_field(mapping, k, f"{what} {key}") for k in mapping}


def decode_result(
    value: bytes | None, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> InferenceResult:
    """Decode a result message; unknown fields are ignored (forward compatible)."""
    what = "result"
    data = _as_bytes(value, what)
    _check_size(data, max_bytes, what)
    obj = _load_json_object(data, what)
    source = _dict_field(obj, "source", what)
    for key in ("partition", "offset", "first_offset", "last_offset"):
        if key in source:
            _int_field(source, key, f"{what} source")
    headers = _dict_field(obj, "headers", what, optional=True)
    if not all(isinstance(v, str) for v in headers.values()):
        _fail("wrong_type", "field 'headers' of the result message must map names to strings")
    produced_at = _int_field(obj, "produced_at", what)
    assert produced_at is not None  # noqa: S101 (not optional)
    return InferenceResult(
        device_id=_str_field(obj, "device_id", what),
        model=_str_field(obj, "model", what),
        version=_str_field(obj, "version", what),
        label=_str_field(obj, "label", what),
        score=_float_field(obj, "score", what),
        scores=_number_map(obj, "scores", what),
        source=source,
        latency_ms=_number_map(obj, "latency_ms", what),
        ts=_int_field(obj, "ts", what, optional=True),
        produced_at=produced_at,
        agent_id=_str_field(obj, "agent_id", what),
        true_label=_str_field(obj, "true_label", what, optional=True),
        headers=dict(headers),
    )


# --------------------------------------------------------------------- dead letters


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
        if name in _DEAD_LETTER_HEADERS:
            continue
        out.append((_text(name), _raw_header(raw)))
    out += [
        (topics.H_ERROR_TYPE, _h(error_type)),
        (topics.H_ERROR_MESSAGE, _h(error_message)),
        (topics.H_SOURCE_TOPIC, _h(topic)),
        (topics.H_SOURCE_PARTITION, _h(int(partition))),
        (topics.H_SOURCE_OFFSET, _h(int(offset))),
        (topics.H_AGENT_ID, _h(agent_id)),
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
        _fail("missing_field", f"the dead letter lacks the header {name!r}")
    text = hdrs[name].strip()
    digits = text[1:] if signed and text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 19):
        _fail(
            "bad_header",
            f"header {name!r} of the dead letter must be a decimal integer, got "
            f"{_short(hdrs[name], 40)!r}",
        )
    return int(text)


def decode_dead_letter(value: bytes | None, headers: Headers | None) -> DeadLetter:
    """Read a dead letter back: its original value and headers plus the error details."""
    if value is not None and not isinstance(value, bytes | bytearray | memoryview):
        _fail("wrong_type", f"the dead letter value must be bytes, got {type(value).__name__}")
    hdrs = headers_dict(headers)
    for name in (topics.H_ERROR_TYPE, topics.H_SOURCE_TOPIC, topics.H_AGENT_ID):
        if name not in hdrs:
            _fail(
                "missing_field",
                f"the dead letter lacks the header {name!r}; is this message from the "
                "dead-letter topic?",
            )
    return DeadLetter(
        value=None if value is None else bytes(value),
        headers={k: v for k, v in hdrs.items() if k not in _DEAD_LETTER_HEADERS},
        error_type=hdrs[topics.H_ERROR_TYPE],
        error_message=hdrs.get(topics.H_ERROR_MESSAGE, ""),
        source_topic=hdrs[topics.H_SOURCE_TOPIC],
        source_partition=_int_header(hdrs, topics.H_SOURCE_PARTITION, signed=True),
        source_offset=_int_header(hdrs, topics.H_SOURCE_OFFSET, signed=True),
        agent_id=hdrs[topics.H_AGENT_ID],
    )


__all__ = [
    "CONTENT_TYPES",
    "DEFAULT_MAX_CHANNELS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_SAMPLES",
    "Headers",
    "decode_dead_letter",
    "decode_image",
    "decode_result",
    "decode_sensor",
    "dead_letter_headers",
    "encode_chunk",
    "encode_jpeg",
    "encode_npy",
    "encode_png",
    "encode_reading",
    "encode_result",
    "headers_dict",
    "image_headers",
    "sensor_headers",
    "sniff_content_type",
]
