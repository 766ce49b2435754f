"""Samples: an input an agent captured for labelling, with what the model said about it.

The value is the input as the agent received it (a sensor window: a chunk of its readings);
the headers are the input's own plus the sample headers (docs/wire-format.md, "Samples").
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from stream import topics
from stream.codecs.deadletters import _int_header, _raw_header
from stream.codecs.fields import fail, short
from stream.codecs.headers import Headers, header_bytes, header_text, headers_dict
from stream.schemas import Sample

#: The headers a sample adds (a stale copy in the input's headers is dropped).
SAMPLE_HEADERS = (
    topics.H_SAMPLE_REASON,
    topics.H_SAMPLE_MODEL,
    topics.H_SAMPLE_VERSION,
    topics.H_SAMPLE_LABEL,
    topics.H_SAMPLE_SCORE,
    topics.H_SAMPLE_SCORES,
    topics.H_SAMPLE_DRIFT,
    topics.H_SOURCE_TOPIC,
    topics.H_SOURCE_PARTITION,
    topics.H_SOURCE_OFFSET,
    topics.H_SOURCE_LAST_OFFSET,
    topics.H_AGENT_ID,
)
#: Scores are written with this many decimals.
SCORE_DIGITS = 6


def sample_headers(
    original: Headers | None,
    *,
    reason: str,
    model: str,
    version: str,
    label: str,
    score: float,
    scores: Mapping[str, float],
    drift: float | None,
    topic: str,
    partition: int,
    offset: int,
    last_offset: int,
    agent_id: str,
) -> Headers:
    """The input's headers, exactly as received (minus stale sample headers), then ours."""
    out: Headers = [
        (header_text(name), _raw_header(raw))
        for name, raw in original or []
        if name not in SAMPLE_HEADERS
    ]
    text = {k: round(float(v), SCORE_DIGITS) for k, v in scores.items()}
    out += [
        (topics.H_SAMPLE_REASON, header_bytes(reason)),
        (topics.H_SAMPLE_MODEL, header_bytes(model)),
        (topics.H_SAMPLE_VERSION, header_bytes(version)),
        (topics.H_SAMPLE_LABEL, header_bytes(label)),
        (topics.H_SAMPLE_SCORE, header_bytes(round(float(score), SCORE_DIGITS))),
        (topics.H_SAMPLE_SCORES, json.dumps(text, separators=(",", ":"), allow_nan=False).encode()),
        (topics.H_SOURCE_TOPIC, header_bytes(topic)),
        (topics.H_SOURCE_PARTITION, header_bytes(int(partition))),
        (topics.H_SOURCE_OFFSET, header_bytes(int(offset))),
        (topics.H_SOURCE_LAST_OFFSET, header_bytes(int(last_offset))),
        (topics.H_AGENT_ID, header_bytes(agent_id)),
    ]
    if drift is not None and math.isfinite(drift):
        out.append((topics.H_SAMPLE_DRIFT, header_bytes(round(float(drift), SCORE_DIGITS))))
    return out


def _float(hdrs: Mapping[str, str], name: str) -> float:
    try:
        value = float(hdrs[name])
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        fail("bad_header", f"header {name!r} of the sample must be a finite number, got "
             f"{short(hdrs[name], 40)!r}")  # fmt: skip
    return value


def decode_sample(value: bytes | None, headers: Headers | None) -> Sample:
    """Read a sample back: the input's value and headers plus what the agent said."""
    if value is not None and not isinstance(value, bytes | bytearray | memoryview):
        fail("wrong_type", f"the sample value must be bytes, got {type(value).__name__}")
    hdrs = headers_dict(headers)
    required = (
        topics.H_SAMPLE_REASON,
        topics.H_SAMPLE_MODEL,
        topics.H_SAMPLE_VERSION,
        topics.H_SAMPLE_LABEL,
        topics.H_SAMPLE_SCORE,
        topics.H_SOURCE_TOPIC,
        topics.H_AGENT_ID,
    )
    for name in required:
        if name not in hdrs:
            fail(
                "missing_field",
                f"the sample lacks the header {name!r}; is this message from the samples topic?",
            )
    try:
        raw_scores = json.loads(hdrs.get(topics.H_SAMPLE_SCORES) or "{}")
    except ValueError:
        raw_scores = None
    if not isinstance(raw_scores, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in raw_scores.values()
    ):
        fail("bad_header", "header 'sample-scores' must be a JSON object of label -> score")
    offset = _int_header(hdrs, topics.H_SOURCE_OFFSET, signed=True)
    last = hdrs.get(topics.H_SOURCE_LAST_OFFSET)
    return Sample(
        value=None if value is None else bytes(value),
        headers={k: v for k, v in hdrs.items() if k not in SAMPLE_HEADERS},
        reason=hdrs[topics.H_SAMPLE_REASON],
        model=hdrs[topics.H_SAMPLE_MODEL],
        version=hdrs[topics.H_SAMPLE_VERSION],
        label=hdrs[topics.H_SAMPLE_LABEL],
        score=_float(hdrs, topics.H_SAMPLE_SCORE),
        scores={str(k): float(v) for k, v in raw_scores.items()},
        drift=_float(hdrs, topics.H_SAMPLE_DRIFT) if topics.H_SAMPLE_DRIFT in hdrs else None,
        source_topic=hdrs[topics.H_SOURCE_TOPIC],
        source_partition=_int_header(hdrs, topics.H_SOURCE_PARTITION, signed=True),
        source_offset=offset,
        source_last_offset=offset
        if last is None
        else _int_header(hdrs, topics.H_SOURCE_LAST_OFFSET, signed=True),
        agent_id=hdrs[topics.H_AGENT_ID],
    )
