"""Sensor readings: ``{"device_id", "ts", "values"}`` or a chunk ``{..., "samples"}``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from stream.codecs.fields import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_DEVICE_ID_CHARS,
    MAX_TS,
    as_bytes,
    check_size,
    device_id_field,
    fail,
    fast_json_object,
    is_number,
    json_type,
    load_json_object,
    nested_within,
    ts_field,
)
from stream.codecs.headers import content_type
from stream.content_types import SENSOR_CONTENT_TYPES
from stream.exceptions import DecodeError
from stream.schemas import SensorChunk

DEFAULT_MAX_SAMPLES = 10_000
DEFAULT_MAX_CHANNELS = 1024
#: The fields :func:`decode_sensor` checks; any other field is ignored.
_SENSOR_FIELDS = frozenset({"device_id", "ts", "values", "samples"})
#: Magnitudes below this round to a finite float32 (max + half an ulp).
_FLOAT32_LIMIT = float(np.finfo(np.float32).max) + 2.0**103


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
    if isinstance(ts, bool) or not isinstance(ts, int | np.integer) or not 0 <= ts <= MAX_TS:
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
    """Decode a reading or a chunk into float32 samples shaped (n, channels).

    The JSON is parsed by orjson when it is installed (:func:`fast_json_object`); what
    that path cannot decide exactly as the standard library's parser would (an error, an
    integer beyond 64 bits, deep nesting in an unchecked field) is decoded again by the
    reference parser, so values, error reasons and messages do not depend on orjson.
    """
    what = "sensor"
    data = as_bytes(value, what)
    check_size(data, max_bytes, what)
    limits = (max_samples, channels, max_channels)
    obj = fast_json_object(data)
    if obj is not None and all(nested_within(v) for k, v in obj.items() if k not in _SENSOR_FIELDS):
        try:
            return _sensor_chunk(obj, data, *limits)
        except DecodeError:
            pass  # the reference parser below words the error (or reads a 64-bit+ ts)
    return _sensor_chunk(load_json_object(data, what), data, *limits)


def _sensor_chunk(
    obj: dict[str, Any],
    data: bytes,
    max_samples: int,
    channels: int | None,
    max_channels: int,
) -> SensorChunk:
    what = "sensor"
    device_id = device_id_field(obj, what)
    ts = ts_field(obj, what)
    if "samples" in obj and "values" in obj:
        fail(
            "wrong_shape",
            "the sensor message has both 'values' and 'samples'; send one reading as "
            "'values' or a chunk as 'samples'",
        )
    if "samples" in obj:
        field_name = "samples"
        rows = obj["samples"]
        if not isinstance(rows, list) or not rows:
            fail(
                "wrong_shape" if isinstance(rows, list) else "wrong_type",
                "field 'samples' must be a non-empty array of readings [[c1, c2, ...], ...], "
                f"got {_describe(rows)}",
            )
        if len(rows) > max_samples:
            fail(
                "too_large",
                f"field 'samples' holds {len(rows)} readings, over the limit of "
                f"{max_samples}; split the chunk",
            )
        if not all(type(r) is list for r in rows):
            fail(
                "wrong_type",
                "every element of 'samples' must be an array of numbers, one per channel",
            )
        lengths = {len(r) for r in rows}
        if len(lengths) != 1:
            fail(
                "wrong_shape",
                "the readings in 'samples' have different channel counts "
                f"{sorted(lengths)[:5]}; every reading needs one number per channel",
            )
    elif "values" in obj:
        field_name = "values"
        row = obj["values"]
        if not isinstance(row, list):
            fail(
                "wrong_type",
                f"field 'values' must be an array of numbers, got {_describe(row)}",
            )
        rows = [row]
    else:
        fail(
            "missing_field",
            "the sensor message has neither 'values' (one reading) nor 'samples' (a chunk); "
            "add one of them",
        )
    width = len(rows[0])
    if width == 0:
        fail(
            "wrong_shape",
            f"field {field_name!r} holds an empty reading; send one number per channel",
        )
    if width > max_channels:
        fail(
            "too_large",
            f"field {field_name!r} has {width} channels, over the limit of {max_channels}",
        )
    samples = _numeric_rows(rows, field_name, data)
    if channels is not None and samples.shape[1] != channels:
        fail(
            "wrong_shape",
            f"the sensor message has {samples.shape[1]} channel(s) but the model expects "
            f"{channels}; send {channels} numbers per reading",
        )
    return SensorChunk(device_id=device_id, ts=ts, samples=samples)


def decode_sensor_record(
    value: bytes | None,
    headers: Iterable[tuple[str, Any]] | Mapping[str, Any] | None,
    *,
    channels: int | None = None,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    max_channels: int = DEFAULT_MAX_CHANNELS,
) -> SensorChunk:
    """A sensor record (value and headers) -> its readings: the ``content-type`` header
    must be absent or one of :data:`~stream.content_types.SENSOR_CONTENT_TYPES`, then
    the value is decoded by :func:`decode_sensor`."""
    ctype = content_type(headers)
    if ctype not in SENSOR_CONTENT_TYPES:
        fail(
            "unknown_content_type",
            f"content-type {ctype!r} on the sensor topic; sensor readings are "
            "application/json (see docs/wire-format.md)",
        )
    return decode_sensor(
        value,
        max_bytes=max_bytes,
        max_samples=max_samples,
        channels=channels,
        max_channels=max_channels,
    )


def _describe(value: object) -> str:
    if isinstance(value, list):
        return f"an array of {len(value)} element(s)"
    return f"a JSON {json_type(value)}"


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
        fail("wrong_type", _bad_numbers(field_name))
    if arr.dtype.kind == "O" and arr.ndim == 2:
        # Rare slow path: ints beyond int64 (or junk) make numpy fall back to objects.
        if not all(is_number(v) for row in rows for v in row):
            fail("wrong_type", _bad_numbers(field_name))
        try:
            arr = np.array([[float(v) for v in row] for row in rows], dtype=np.float64)
        except OverflowError:
            arr = np.array([np.inf])
    elif arr.ndim != 2 or arr.dtype.kind not in "iuf":
        fail("wrong_type", _bad_numbers(field_name))
    # numpy silently turns true/false into 1/0 when mixed with numbers; JSON booleans
    # only exist where the raw text spells them, so the exact check runs only then.
    if (b"true" in raw or b"false" in raw) and any(type(v) is bool for row in rows for v in row):
        fail("wrong_type", _bad_numbers(field_name))
    # NaN compares False, so this one vectorised test also rejects NaN and Infinity.
    if arr.dtype.kind == "f" and not (np.abs(arr) < _FLOAT32_LIMIT).all():
        fail(
            "non_finite",
            f"field {field_name!r} holds a value outside the float32 range (+-3.4e38); "
            "send finite numbers",
        )
    return np.ascontiguousarray(arr, dtype=np.float32)
