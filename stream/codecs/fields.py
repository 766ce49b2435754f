"""JSON field validators shared by the decoders: each raises only ``DecodeError``.

``what`` names the message kind ("sensor", "result", ...) in every error message, so a
message says which message was wrong, which field, and how to fix it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from types import ModuleType
from typing import Any, NoReturn

from stream.exceptions import DecodeError

DEFAULT_MAX_MESSAGE_BYTES = 1_048_576
#: Longest accepted device id (characters).
MAX_DEVICE_ID_CHARS = 256
#: Timestamps are epoch milliseconds that fit a signed 64-bit integer.
MAX_TS = 2**63 - 1


class _NonFiniteConstant(Exception):
    """Raised by ``parse_constant`` when the JSON holds NaN/Infinity."""


def _reject_constant(name: str) -> NoReturn:
    raise _NonFiniteConstant(name)


#: Built once: ``json.loads`` with a hook builds a new decoder per call (~3 us).
_JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def optional_orjson() -> ModuleType | None:
    """The orjson module, or None when it is not installed (it is optional at runtime)."""
    try:
        import orjson
    except ImportError:
        return None
    return orjson


#: orjson (in the ``agent`` extra) parses a 100x6 sensor chunk in ~35 us against the
#: standard library's ~210 us. None when it is not installed: the standard library's
#: parser (:func:`load_json_object`, the reference rules) then decodes everything.
_orjson = optional_orjson()

#: Nesting the fast path accepts in the fields a decoder does not check itself: far below
#: the depth where the reference parser runs out of recursion (~950, less on a deep stack;
#: orjson's own limit is 1,024), so both parsers agree on whatever passes.
FAST_PATH_MAX_DEPTH = 32


def fail(reason: str, message: str) -> NoReturn:
    """Raise ``DecodeError(reason, message)``."""
    raise DecodeError(reason, message)


def as_bytes(value: object, what: str) -> bytes:
    """The message value as ``bytes``; a tombstone or a deserialized value is refused."""
    if value is None:
        fail(
            "missing_field",
            f"the {what} message has no value (a tombstone?); send the payload as the "
            "message value",
        )
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    fail(
        "wrong_type",
        f"the {what} message value must be bytes, got {type(value).__name__}; configure "
        "the consumer without a value deserializer",
    )


def check_size(data: bytes, max_bytes: int, what: str) -> None:
    """Refuse a message over ``max_bytes``."""
    if len(data) > max_bytes:
        fail(
            "too_large",
            f"the {what} message is {len(data)} bytes, over the limit of {max_bytes}; send "
            "smaller messages (fewer samples per chunk, smaller images) or raise max_bytes",
        )


def load_json_object(data: bytes, what: str) -> dict[str, Any]:
    """Parse UTF-8 JSON that must be an object; NaN/Infinity and deep nesting refused."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(
            "not_json",
            f"the {what} message is not UTF-8 text ({exc.reason} at byte {exc.start}); "
            "encode it as UTF-8 JSON",
        )
    try:
        obj = _JSON_DECODER.decode(text)
    except _NonFiniteConstant as exc:
        fail(
            "non_finite",
            f"the {what} message holds {exc.args[0]}, which is not valid JSON; send only "
            "finite numbers (drop or interpolate missing readings)",
        )
    except RecursionError:
        fail("not_json", f"the {what} message nests JSON too deeply; send a flat object")
    except ValueError as exc:  # JSONDecodeError, and ints over the digit limit
        fail(
            "not_json",
            f"the {what} message is not valid JSON ({short(str(exc))}); send a UTF-8 JSON "
            "object as documented in docs/wire-format.md",
        )
    if not isinstance(obj, dict):
        fail(
            "wrong_type",
            f"the {what} message must be a JSON object, got a JSON {json_type(obj)}; "
            "wrap the fields in {...}",
        )
    return obj


def fast_json_object(data: bytes) -> dict[str, Any] | None:
    """``data`` parsed by orjson when it is installed and reads a JSON object, else None.

    orjson refuses everything the reference rules of :func:`load_json_object` refuse
    (NaN/Infinity, invalid UTF-8, numbers that overflow a double) and more (lone
    surrogates, integers over 4,300 digits), and reads the same values with two
    exceptions: an integer outside [-2**63, 2**64) becomes the nearest float (the
    standard library keeps an int), and nesting up to 1,024 levels is accepted. So a
    decoder keeps what it decoded from this object only when it succeeded, every field it
    requires to be an integer was one, and the fields it did not check pass
    :func:`nested_within`; otherwise (None, or any ``DecodeError``) it decodes again from
    :func:`load_json_object`, whose outcome (value, or reason and message) is the contract.
    """
    if _orjson is None:
        return None
    try:
        obj = _orjson.loads(data)
    except ValueError:  # orjson.JSONDecodeError
        return None
    return obj if type(obj) is dict else None


def nested_within(value: object, depth: int = FAST_PATH_MAX_DEPTH) -> bool:
    """True when ``value`` (decoded JSON) nests arrays and objects at most ``depth`` deep."""
    level: list[object] = [value]
    for _ in range(depth + 1):
        containers = [v for v in level if type(v) is list or type(v) is dict]
        if not containers:
            return True
        level = [x for c in containers for x in (c.values() if type(c) is dict else c)]
    return False


def short(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters (for quoting untrusted input in messages)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_type(obj: object) -> str:
    """The JSON name of a decoded value's type ("null", "number", "array", ...)."""
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


def require(obj: Mapping[str, Any], key: str, what: str) -> Any:
    """The value of ``key``, which must be present."""
    if key not in obj:
        fail(
            "missing_field",
            f"the {what} message lacks the field {key!r}; add it (see docs/wire-format.md)",
        )
    return obj[key]


def str_field(obj: Mapping[str, Any], key: str, what: str, *, optional: bool = False) -> Any:
    """A string field (``None`` when optional and null or absent)."""
    if optional and obj.get(key) is None:
        return None
    value = require(obj, key, what)
    if not isinstance(value, str):
        fail(
            "wrong_type",
            f"field {key!r} of the {what} message must be a string, got a JSON {json_type(value)}",
        )
    return value


def bounded_str_field(
    obj: Mapping[str, Any],
    key: str,
    what: str,
    *,
    limit: int,
    optional: bool = False,
    fix: str = "shorten it",
) -> Any:
    """A non-empty string field of at most ``limit`` characters (``None`` when optional
    and null or absent); ``fix`` ends the message of a value over the limit."""
    value = str_field(obj, key, what, optional=optional)
    if value is None:
        return None
    if not value:
        fail("missing_field", f"field {key!r} of the {what} message is empty; set it")
    if len(value) > limit:
        fail(
            "too_large",
            f"field {key!r} of the {what} message has {len(value)} characters, over "
            f"the limit of {limit}; {fix}",
        )
    return value


def device_id_field(obj: Mapping[str, Any], what: str) -> str:
    """The ``device_id`` field: a non-empty string of bounded length."""
    value: str = bounded_str_field(
        obj, "device_id", what, limit=MAX_DEVICE_ID_CHARS, fix="use a shorter id"
    )
    return value


def int_field(obj: Mapping[str, Any], key: str, what: str, *, optional: bool = False) -> int | None:
    """An integer field in [0, 2**63) (``None`` when optional and null or absent)."""
    if optional and obj.get(key) is None:
        return None
    value = require(obj, key, what)
    unit = " of epoch milliseconds" if key in ("ts", "produced_at") else ""
    if not isinstance(value, int) or isinstance(value, bool):
        fail(
            "wrong_type",
            f"field {key!r} of the {what} message must be an integer{unit}, got a JSON "
            f"{json_type(value)}",
        )
    if not 0 <= value <= MAX_TS:
        fail(
            "wrong_type",
            f"field {key!r} of the {what} message must be an integer in [0, 2**63), got "
            f"{short(str(value), 40)}",
        )
    return value


def ts_field(obj: Mapping[str, Any], what: str) -> int:
    """The required ``ts`` field (epoch milliseconds)."""
    ts = int_field(obj, "ts", what)
    assert ts is not None  # noqa: S101 (not optional)
    return ts


def is_number(value: object) -> bool:
    """A JSON number (``bool`` is not)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def float_field(obj: Mapping[str, Any], key: str, what: str) -> float:
    """A finite number field, as ``float``."""
    value = require(obj, key, what)
    if not is_number(value):
        fail(
            "wrong_type",
            f"field {key!r} of the {what} message must be a number, got a JSON {json_type(value)}",
        )
    try:
        out = float(value)
    except OverflowError:
        out = math.inf
    if not math.isfinite(out):
        fail("non_finite", f"field {key!r} of the {what} message is not a finite number")
    return out


def dict_field(obj: Mapping[str, Any], key: str, what: str, *, optional: bool = False) -> Any:
    """An object field (``{}`` when optional and null or absent)."""
    if optional and obj.get(key) is None:
        return {}
    value = require(obj, key, what)
    if not isinstance(value, dict):
        fail(
            "wrong_type",
            f"field {key!r} of the {what} message must be an object, got a JSON {json_type(value)}",
        )
    return value


def number_map(obj: Mapping[str, Any], key: str, what: str) -> dict[str, float]:
    """An object field mapping names to finite numbers."""
    mapping = dict_field(obj, key, what)
    return {k: float_field(mapping, k, f"{what} {key}") for k in mapping}
