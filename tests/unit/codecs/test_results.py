"""Result codecs: round trips, and failures with their reason and message."""

from __future__ import annotations

import json

import pytest

from stream.codecs import decode_result, encode_result
from stream.exceptions import DecodeError
from stream.schemas import InferenceResult
from tests.unit.codecs.helpers import assert_meaningful


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
