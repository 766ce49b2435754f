"""The agent's direct result JSON: the same bytes as ``stream.codecs.encode_result``."""

from __future__ import annotations

import numpy as np

from edge_agent.batching import Pending
from edge_agent.results import encode_results
from stream.codecs import decode_result, encode_result


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
