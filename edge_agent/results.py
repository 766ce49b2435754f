"""Results of a batch as wire-contract JSON (:class:`stream.schemas.InferenceResult`).

The dicts are built directly, with the same keys and order as
:func:`stream.codecs.encode_result` (``dataclasses.asdict`` deep-copies every field and
was a third of the agent's CPU time), and written by the same
:func:`~stream.codecs.jsonout.dumps_compact`, so the bytes are identical (checked by an
integration test) whether orjson is installed or not.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge_agent.batching import Pending
from stream import topics
from stream.codecs import headers_dict
from stream.codecs.jsonout import dumps_compact

#: Input headers embedded in a result: at most this many, names and values cut to these
#: lengths, so a result stays far below the results topic's message limit (1 MB by default
#: on Kafka) whatever headers the input carried (undecodable bytes grow ~6x in JSON).
MAX_RESULT_HEADERS = 32
MAX_HEADER_NAME_CHARS = 64
MAX_HEADER_VALUE_CHARS = 256


def encode_results(
    items: Sequence[Pending],
    scores: np.ndarray,
    *,
    model: str,
    version: str,
    labels: Sequence[str],
    topic: str,
    agent_id: str,
    started: float,
    infer_s: float,
    produced_at: int,
) -> tuple[list[bytes], list[int]]:
    """JSON values for ``items`` (scores: float32 (N, classes)) and their e2e latency (ms).

    ``started`` is the wall time the batch started (queue latency ends there), ``infer_s``
    the batch's inference time, ``produced_at`` the epoch ms stamped on every result.
    """
    best = scores.argmax(axis=1).tolist()
    rows = scores.tolist()
    named = len(labels) == scores.shape[1]
    infer_ms = round(infer_s * 1000.0, 3)
    values: list[bytes] = []
    e2e: list[int] = []
    for it, j, row in zip(items, best, rows, strict=True):
        if named:
            by_label = dict(zip(labels, row, strict=True))
            label = labels[j]
        else:
            by_label = {str(k): v for k, v in enumerate(row)}
            label = str(j)
        source: dict[str, Any] = {"topic": topic, "partition": it.partition}
        if it.window:
            source["offset"] = it.last_offset
            source["first_offset"] = it.offset
            source["last_offset"] = it.last_offset
        else:
            source["offset"] = it.offset
        e2e_ms = produced_at - (it.ts if it.ts is not None else it.kafka_ts)
        hdrs = bounded_headers(it.headers)
        values.append(
            dumps_compact(
                {
                    "device_id": it.device_id,
                    "model": model,
                    "version": version,
                    "label": label,
                    "score": row[j],
                    "scores": by_label,
                    "source": source,
                    "latency_ms": {
                        "queue": round(max(started - it.consumed_at, 0.0) * 1000.0, 3),
                        "infer": infer_ms,
                        "e2e": float(e2e_ms),
                    },
                    "ts": it.ts,
                    "produced_at": produced_at,
                    "agent_id": agent_id,
                    "true_label": hdrs.get(topics.H_LABEL),
                    "headers": hdrs,
                }
            )
        )
        e2e.append(e2e_ms)
    return values, e2e


def bounded_headers(headers: Any) -> dict[str, str]:
    """:func:`headers_dict` within the ``MAX_RESULT_HEADERS``/``..._CHARS`` limits."""
    hdrs = headers_dict(headers)
    if len(hdrs) <= MAX_RESULT_HEADERS and all(
        len(k) <= MAX_HEADER_NAME_CHARS and len(v) <= MAX_HEADER_VALUE_CHARS
        for k, v in hdrs.items()
    ):
        return hdrs
    out: dict[str, str] = {}
    for k, v in hdrs.items():
        if len(out) >= MAX_RESULT_HEADERS:
            break
        out[k[:MAX_HEADER_NAME_CHARS]] = v[:MAX_HEADER_VALUE_CHARS]
    return out


def window_as_npy(x: np.ndarray) -> bytes:
    """A window's readings as ``.npy`` bytes: the dead-letter value of a failed window."""
    buf = io.BytesIO()
    np.save(buf, x, allow_pickle=False)
    return buf.getvalue()
