"""Inference results: the JSON an agent produces to ``inference.results``."""

from __future__ import annotations

from dataclasses import asdict

from stream.codecs.fields import (
    DEFAULT_MAX_MESSAGE_BYTES,
    as_bytes,
    check_size,
    dict_field,
    fail,
    float_field,
    int_field,
    load_json_object,
    number_map,
    str_field,
)
from stream.codecs.jsonout import dumps_compact
from stream.schemas import InferenceResult


def encode_result(r: InferenceResult) -> bytes:
    """A result as compact JSON (the dataclass fields as keys). NaN is refused."""
    try:
        return dumps_compact(asdict(r))
    except ValueError as exc:
        msg = f"result for device {r.device_id!r} holds NaN or Infinity: {exc}"
        raise ValueError(msg) from exc


def decode_result(
    value: bytes | None, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> InferenceResult:
    """Decode a result message; unknown fields are ignored (forward compatible)."""
    what = "result"
    data = as_bytes(value, what)
    check_size(data, max_bytes, what)
    obj = load_json_object(data, what)
    source = dict_field(obj, "source", what)
    for key in ("partition", "offset", "first_offset", "last_offset"):
        if key in source:
            int_field(source, key, f"{what} source")
    headers = dict_field(obj, "headers", what, optional=True)
    if not all(isinstance(v, str) for v in headers.values()):
        fail("wrong_type", "field 'headers' of the result message must map names to strings")
    produced_at = int_field(obj, "produced_at", what)
    assert produced_at is not None  # noqa: S101 (not optional)
    return InferenceResult(
        device_id=str_field(obj, "device_id", what),
        model=str_field(obj, "model", what),
        version=str_field(obj, "version", what),
        label=str_field(obj, "label", what),
        score=float_field(obj, "score", what),
        scores=number_map(obj, "scores", what),
        source=source,
        latency_ms=number_map(obj, "latency_ms", what),
        ts=int_field(obj, "ts", what, optional=True),
        produced_at=produced_at,
        agent_id=str_field(obj, "agent_id", what),
        true_label=str_field(obj, "true_label", what, optional=True),
        headers=dict(headers),
    )
