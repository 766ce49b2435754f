"""``dumps_compact``, the JSON writer of results: with orjson, the values the standard
library writes (the reference) and the same refusals; without it, today's bytes."""

from __future__ import annotations

import dataclasses
import json
import math
from contextlib import AbstractContextManager
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.codecs import decode_result, encode_result, jsonout
from stream.codecs.jsonout import dumps_compact
from stream.schemas import InferenceResult
from tests.unit.codecs.helpers import FUZZ
from tests.unit.codecs.test_results import result


def reference(obj: Any) -> bytes:
    """What the encoders wrote before orjson (and write without it)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()


def canonical(raw: bytes) -> str:
    """The JSON's values, re-encoded: floats exactly (``-0.0`` too), strings escaped alike."""
    return json.dumps(json.loads(raw))


def without_orjson() -> AbstractContextManager[None]:
    """As on an install without orjson."""
    return patch.object(jsonout, "_orjson", None)


LONE_SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=["Cs"])
VALID_TEXT = st.one_of(
    st.text(max_size=10), st.text(st.characters(codec=None, exclude_categories=["Cn"]), max_size=10)
)
TEXT = VALID_TEXT | st.tuples(st.text(max_size=3), LONE_SURROGATE, st.text(max_size=3)).map("".join)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.00001, 1e16, -0.0, 5e-324, 1.7976931348623157e308]),
    TEXT,
)
TREES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=5).map(tuple),
        st.dictionaries(TEXT, children, max_size=5),
        st.dictionaries(st.integers(-3, 3), children, max_size=2),
    ),
    max_leaves=30,
)
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
#: Trees with NaN or Infinity at some depth (every leaf is one).
HOLDING_NON_FINITE = st.recursive(
    NON_FINITE,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3),
        st.dictionaries(TEXT, children, min_size=1, max_size=3),
    ),
    max_leaves=5,
)
#: Lone surrogates only where they can come from: a device id read from JSON, a label.
RESULTS = st.builds(
    InferenceResult,
    device_id=TEXT,
    model=VALID_TEXT,
    version=VALID_TEXT,
    label=TEXT,
    score=st.floats(0.0, 1.0),
    scores=st.dictionaries(
        VALID_TEXT, st.floats(allow_nan=False, allow_infinity=False), max_size=12
    ),
    source=st.fixed_dictionaries(
        {
            "topic": VALID_TEXT,
            "partition": st.integers(0, 2**31),
            "offset": st.integers(0, 2**63 - 1),
        }
    ),
    latency_ms=st.fixed_dictionaries({k: st.floats(-1e6, 1e6) for k in ("queue", "infer", "e2e")}),
    ts=st.none() | st.integers(0, 2**63 - 1),
    produced_at=st.integers(0, 2**63 - 1),
    agent_id=VALID_TEXT,
    true_label=st.none() | VALID_TEXT,
    headers=st.dictionaries(VALID_TEXT, VALID_TEXT, max_size=4),
)


@FUZZ
@given(TREES)
def test_the_values_are_the_standard_librarys(obj: Any) -> None:
    assert canonical(dumps_compact(obj)) == canonical(reference(obj))


@FUZZ
@given(RESULTS)
def test_results_read_back_as_the_standard_library_writes_them(r: InferenceResult) -> None:
    raw = encode_result(r)
    assert canonical(raw) == canonical(reference(dataclasses.asdict(r)))
    assert decode_result(raw) == r


@FUZZ
@given(TREES, HOLDING_NON_FINITE, st.booleans())
def test_nan_and_infinity_are_refused_anywhere(obj: Any, bad: Any, in_dict: bool) -> None:
    value = {"ok": obj, "bad": bad} if in_dict else [obj, bad]
    with pytest.raises(ValueError, match="not JSON compliant"):
        dumps_compact(value)


@pytest.mark.parametrize(
    "changes",
    [
        {"score": math.nan},
        {"scores": {"a": 0.5, "b": math.inf}},
        {"latency_ms": {"e2e": -math.inf}},
    ],
    ids=["score", "scores", "latency"],
)
def test_encode_result_refuses_non_finite_fields(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="device 'dev-1' holds NaN or Infinity"):
        encode_result(result(**changes))


@FUZZ
@given(TREES)
def test_without_orjson_the_bytes_are_todays(obj: Any) -> None:
    with without_orjson():
        assert dumps_compact(obj) == reference(obj)


@FUZZ
@given(RESULTS)
def test_without_orjson_results_are_todays_bytes(r: InferenceResult) -> None:
    with without_orjson():
        assert encode_result(r) == reference(dataclasses.asdict(r))


def test_orjson_writes_plain_values() -> None:
    orjson = pytest.importorskip("orjson")
    plain = {"device_id": "cam-\u00e9", "score": 0.00001, "ts": 2**64 - 1, "true_label": None}
    assert dumps_compact(plain) == orjson.dumps(plain)


def _nested(depth: int) -> list[Any]:
    out: list[Any] = [0.5]
    for _ in range(depth):
        out = [out]
    return out


@pytest.mark.parametrize(
    "obj",
    [
        {"device_id": "cam-\ud800"},  # a lone surrogate (a device id read from JSON)
        {"offset": 2**64},
        {1: 0.5},
        {"x": 1.5, "y": type("Sub", (float,), {})(2.5)},
        _nested(300),  # deeper than orjson's limit
    ],
    ids=["surrogate", "int-beyond-64-bits", "int-key", "float-subclass", "deep"],
)
def test_what_orjson_refuses_or_writes_otherwise_is_todays_bytes(obj: Any) -> None:
    assert dumps_compact(obj) == reference(obj)


def test_what_the_standard_library_refuses_stays_refused() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="Circular reference"):
        dumps_compact(cyclic)
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps_compact({"when": dataclasses.make_dataclass("D", [])()})
