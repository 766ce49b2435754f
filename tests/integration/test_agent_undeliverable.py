"""Outputs the broker can never take do not block the partition (issue 10, item 2).

The agent's producer refuses any record over ``--max-output-bytes`` before it leaves, as a
broker refuses one over the topic's ``max.message.bytes`` (the embedded broker enforces no
topic limit, so the agent's own limit stands in for it; both clients report the same
permanent error code). Such a refusal is answered another way, never retried:

* a dead letter too large -> the same dead letter without the value and original headers,
  with the value's size and sha256;
* a result too large -> an ``undeliverable_result`` dead letter (itself stripped if needed);

and the input's offset is committed, so the good input behind it is answered.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream import codecs, topics
from tests.fixtures.agent import CLIENTS

pytestmark = pytest.mark.integration

#: Small enough that a 20 KB dead letter and a result with 32 long headers exceed it.
MAX_OUTPUT = 4000


def _committed(kafka_settings: Any, group: str, topic: str) -> int | None:
    from kafka import TopicPartition

    from stream.kafka import make_consumer

    consumer = make_consumer(kafka_settings, group_id=group)
    try:
        return consumer.committed(TopicPartition(topic, 0))
    finally:
        consumer.close()


@pytest.mark.parametrize("client", CLIENTS)
def test_outputs_too_large_for_the_topic_never_block_the_partition(
    client: str,
    kafka_settings: Any,
    streaming_agent: Any,
    producer_factory: Any,
    digits_bundles: dict[str, Path],
) -> None:
    run = streaming_agent(
        digits_bundles["int8"], group=True, max_output_bytes=MAX_OUTPUT, client=client
    )
    agent, reader, inp = run.agent, run.reader, run.topics.input
    rng = np.random.default_rng(3)
    png = codecs.encode_png(rng.integers(0, 16, (8, 8), dtype=np.uint8))
    ok_headers = codecs.image_headers("image/png", "cam-1", 1_700_000_000_000)
    corrupt = b"\x89PNG\r\n\x1a\n" + rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    many = ok_headers + [(f"x-note-{i:02d}", b"v" * 300) for i in range(40)]
    producer = producer_factory()
    producer.send(inp, value=corrupt, key=b"cam-1", headers=[("content-type", b"image/png")])
    producer.send(inp, value=png, key=b"cam-1", headers=many)  # its result is too large
    producer.send(inp, value=png, key=b"cam-1", headers=ok_headers)  # answered normally
    producer.flush()

    run.until(results=1, dead=2)
    assert agent.stop() == 0
    reader.poll()
    assert [r.source["offset"] for r in run.results()] == [2]
    dead = {}
    for rec in reader.records[run.topics.deadletter]:
        hdrs = codecs.headers_dict(rec.headers)
        assert rec.value is None, "the value that made it too large is left out"
        assert "x-note-00" not in hdrs, "so are the original headers"
        dead[int(hdrs[topics.H_SOURCE_OFFSET])] = hdrs
    assert sorted(dead) == [0, 1]
    assert dead[0][topics.H_ERROR_TYPE] == "corrupt_image"
    assert dead[0][topics.H_ORIGINAL_SIZE] == str(len(corrupt))
    assert dead[0][topics.H_ORIGINAL_SHA256] == hashlib.sha256(corrupt).hexdigest()
    assert "MESSAGE_TOO_LARGE" in dead[0][topics.H_VALUE_DROPPED]
    assert dead[1][topics.H_ERROR_TYPE] == "undeliverable_result"
    assert dead[1][topics.H_ORIGINAL_SIZE] == str(len(png))
    assert "MESSAGE_TOO_LARGE" in dead[1][topics.H_ERROR_MESSAGE]
    # Everything is committed: nothing is replayed, nothing blocks the partition.
    assert _committed(kafka_settings, run.topics.group, inp) == 3
    too_large = {"code": "MESSAGE_TOO_LARGE"}
    assert agent.sample("edge_agent_undeliverable_total", {"output": "result", **too_large}) == 1
    assert (
        agent.sample("edge_agent_undeliverable_total", {"output": "deadletter", **too_large}) == 2
    )
    assert agent.sample("edge_agent_delivery_errors_total", {"stage": "produce"}) in (None, 0.0)
