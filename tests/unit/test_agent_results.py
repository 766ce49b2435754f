"""The agent's direct result JSON: the same bytes as ``stream.codecs.encode_result``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge_agent.batching import Pending
from edge_agent.results import encode_results
from stream.codecs import decode_result, encode_result, jsonout


def pending(offset: int, *, ts: int | None, window: bool = False) -> Pending:
    return Pending(
        x=np.zeros((2, 2, 1), np.uint8),
        device_id=f"cam-{offset}",
        partition=1,
        offset=offset,
        last_offset=offset + (3 if window else 0),
        window=window,
        ts=ts,
        kafka_ts=1_718_000_000_000,
        headers=[("content-type", b"image/jpeg"), ("label", b"b"), ("x", b"\xff")],
        consumed_at=100.0,
        key=b"cam",
        value=b"...",
    )


def test_results_are_the_bytes_encode_result_writes() -> None:
    items = [pending(5, ts=1_718_000_000_100), pending(6, ts=None, window=True)]
    scores = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]], dtype=np.float32)
    for labels, expected in ((["a", "b", "c"], ["b", "a"]), ([], ["1", "0"])):
        values, e2e = encode_results(
            items,
            scores,
            model="m",
            version="v1",
            labels=labels,
            topic="images",
            agent_id="agent-1",
            started=100.0025,
            infer_s=0.0041,
            produced_at=1_718_000_000_200,
        )
        assert e2e == [100, 200]
        results = [decode_result(v) for v in values]
        assert [r.label for r in results] == expected
        assert [encode_result(r) for r in results] == values
        assert results[0].latency_ms == {"queue": 2.5, "infer": 4.1, "e2e": 100.0}
        assert results[0].true_label == "b"
        assert results[0].headers["x"] == "\ufffd"
        assert results[1].source == {
            "topic": "images",
            "partition": 1,
            "offset": 9,
            "first_offset": 6,
            "last_offset": 9,
        }


@pytest.mark.parametrize("orjson", [True, False], ids=["orjson", "stdlib"])
@pytest.mark.parametrize(
    "device_id", ["cam-\u00e9\U0001f600", "cam-\udcff"], ids=["utf8", "surrogate"]
)
def test_the_bytes_are_encode_results_with_or_without_orjson(
    monkeypatch: pytest.MonkeyPatch, orjson: bool, device_id: str
) -> None:
    if not orjson:
        monkeypatch.setattr(jsonout, "_orjson", None)
    item = dataclasses.replace(pending(1, ts=1), device_id=device_id)
    value = _encode_one(item, [1e-05, 0.99999], ["a", "\u00e9"])
    r = decode_result(value)
    assert r.device_id == device_id
    assert encode_result(r) == value


def _encode_one(item: Pending, scores: list[float], labels: list[str]) -> bytes:
    values, _ = encode_results(
        [item],
        np.array([scores], np.float32),
        model="m",
        version="1",
        labels=labels,
        topic="t",
        agent_id="a",
        started=0.0,
        infer_s=0.0,
        produced_at=2,
    )
    return values[0]


def test_embedded_headers_are_bounded_whatever_the_input_carried() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from edge_agent.results import (
        MAX_HEADER_NAME_CHARS,
        MAX_HEADER_VALUE_CHARS,
        MAX_RESULT_HEADERS,
        bounded_headers,
    )

    headers = st.lists(
        st.tuples(st.text(max_size=300), st.one_of(st.none(), st.binary(max_size=5000))),
        max_size=200,
    )

    @settings(max_examples=60, deadline=None)
    @given(headers)
    def check(hdrs: list[tuple[str, bytes | None]]) -> None:
        item = dataclasses.replace(pending(1, ts=1), headers=hdrs)
        value = _encode_one(item, [0.5, 0.5], ["a", "b"])
        out = bounded_headers(hdrs)
        assert len(out) <= MAX_RESULT_HEADERS
        assert all(len(k) <= MAX_HEADER_NAME_CHARS for k in out)
        assert all(len(v) <= MAX_HEADER_VALUE_CHARS for v in out.values())
        # names <= 64 and values <= 256 chars, each char at most 6 bytes of JSON (\\uXXXX)
        assert len(value) < 2_000 + MAX_RESULT_HEADERS * (64 + 256 + 6) * 6

    check()
