"""The agent on image streams, against the real broker and a real int8 digits bundle."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream import codecs
from stream.bundle import read_manifest
from stream.replay import replay_images
from tests.fixtures.agent import CLIENTS

pytestmark = pytest.mark.integration
logger = logging.getLogger(__name__)

#: Accuracy tolerance. The bundle's accuracy was measured by the trainer with LiteRT on the
#: same 450-image test split (stream.datasets, seed 0) that ``replay_images`` sends. The
#: agent sees the same uint8 pixels (PNG is lossless) through the same preprocessing and
#: the same int8 model; only the batch size differs (32 here, 1 in the trainer), and
#: XNNPACK's batched int8 kernels may round an accumulator differently, which can flip a
#: near-tie. 0.01 is 4 of 450 images.
ACCURACY_TOLERANCE = 0.01


def drain_reader(reader: Any, topic: str, expected: int, timeout_s: float = 120.0) -> list[Any]:
    """All records of ``topic`` once ``expected`` arrived and two more polls found nothing."""
    reader.until(lambda r: r.count(topic) >= expected, timeout_s, f"{expected} on {topic}")
    quiet = 0
    while quiet < 2:
        quiet = quiet + 1 if reader.poll() == 0 else 0
    return reader.records[topic]


@pytest.mark.parametrize("client", CLIENTS)
def test_digits_replay_one_result_per_image_with_the_bundles_accuracy(
    client: str, kafka_settings: Any, streaming_agent: Any, digits_bundles: dict[str, Path]
) -> None:
    bundle = digits_bundles["int8"]
    manifest = read_manifest(bundle)
    run = streaming_agent(bundle, partitions=2, client=client)
    agent, reader = run.agent, run.reader
    inp, out, dl = run.topics

    started = time.monotonic()
    stats = replay_images(kafka_settings, "digits", topic=inp, rate=0, partitions=None)
    n = stats.sent
    assert n == 450
    run.until(results=n, timeout_s=120)
    elapsed = time.monotonic() - started
    assert agent.stop() == 0
    records = drain_reader(reader, out, n)

    # exactly one result per image
    assert len(records) == n
    results = [codecs.decode_result(r.value) for r in records]
    answered = Counter((r.source["partition"], r.source["offset"]) for r in results)
    assert len(answered) == n and max(answered.values()) == 1
    assert all(r.source["topic"] == inp for r in results)
    assert reader.count(dl) == 0

    # the wire contract
    for rec, res in zip(records, results, strict=True):
        assert rec.key == res.device_id.encode()
        assert res.model == manifest.name and res.version == manifest.version
        assert res.agent_id == "thread-agent-0"
        assert set(res.scores) == set(manifest.labels)
        assert res.label == max(res.scores, key=lambda k: res.scores[k])
        assert res.score == res.scores[res.label]
        assert set(res.latency_ms) == {"queue", "infer", "e2e"}
        assert res.latency_ms["queue"] >= 0 and res.latency_ms["infer"] > 0
        assert res.headers["content-type"] == "image/png"
        assert res.true_label == res.headers["label"]
        assert res.ts == int(res.headers["ts"])
        # the agent's fast JSON path writes exactly what stream.codecs.encode_result writes
        assert rec.value == codecs.encode_result(res)

    # accuracy from the results equals the bundle's int8 test accuracy
    accuracy = float(np.mean([r.label == r.true_label for r in results]))
    expected = float(manifest.metrics["accuracy"])
    logger.info(
        "digits int8: accuracy from results=%.4f manifest=%.4f; %d images replayed and "
        "answered in %.2f s (%.0f/s, replay included)",
        accuracy,
        expected,
        n,
        elapsed,
        n / elapsed,
    )
    assert accuracy == pytest.approx(expected, abs=ACCURACY_TOLERANCE)

    # metrics match what was sent
    v = agent.sample
    assert v("edge_agent_messages_consumed_total", {"topic": inp}) == n
    labels = {"topic": out, "model": manifest.name, "version": manifest.version}
    assert v("edge_agent_results_produced_total", labels) == n
    assert v("edge_agent_e2e_latency_seconds_count", {"model": manifest.name}) == n
    batches = v("edge_agent_batch_size_count", {"model": manifest.name})
    assert batches is not None and n / 32 <= batches <= n
    assert v("edge_agent_batch_size_sum", {"model": manifest.name}) == n
    mv = {"model": manifest.name, "version": manifest.version}
    assert v("edge_agent_inference_duration_seconds_count", mv) == batches
    info = {**mv, "sha256": manifest.model_sha256, "variant": manifest.variant}
    assert v("edge_agent_model_info", info) == 1
    for reason in ("not_json", "corrupt_image", "too_large"):
        assert v("edge_agent_deadletters_total", {"reason": reason}) == 0


def test_images_of_other_sizes_and_formats_are_fitted_to_the_model(
    streaming_agent: Any, producer_factory: Any, digits_bundles: dict[str, Path]
) -> None:
    run = streaming_agent(digits_bundles["int8"])
    inp, out, dl, reader = run.topics.input, run.topics.output, run.topics.deadletter, run.reader
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (32, 24, 3), dtype=np.uint8)
    gray = rng.integers(0, 255, (8, 8, 1), dtype=np.uint8)
    messages = [
        (codecs.encode_png(rgb), "image/png"),  # RGB, larger: converted and resized
        (codecs.encode_jpeg(rgb), "image/jpeg"),
        (codecs.encode_npy(gray), "application/x-npy"),  # exact tensor
        (codecs.encode_png(gray), None),  # no content-type: sniffed
    ]
    producer = producer_factory()
    for value, ctype in messages:
        headers = [] if ctype is None else [("content-type", ctype.encode())]
        producer.send(inp, value=value, key=b"cam", headers=headers)
    producer.flush()
    run.until(results=len(messages), timeout_s=60)
    assert reader.count(dl) == 0
    results = [json.loads(r.value) for r in reader.records[out]]
    assert sorted(r["source"]["offset"] for r in results) == [0, 1, 2, 3]
    assert {r["device_id"] for r in results} == {"cam"}  # the key when no device-id header
    assert all(r["ts"] is None and r["latency_ms"]["e2e"] >= 0 for r in results)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_backlog_larger_than_a_fetch_is_read_with_a_small_max_message_size(
    client: str,
    agent_topics: Any,
    agent_thread: Any,
    topic_reader: Any,
    producer_factory: Any,
    digits_bundles: dict[str, Path],
) -> None:
    """Kafka answers a fetch with the first record batch whole, even when it is larger than
    the fetch size the agent asked for (producers batch many small messages): the agent
    must read it, not drop the response and reset the connection for ever (librdkafka did,
    with receive.message.max.bytes set near the fetch size)."""
    topics = agent_topics()
    inp, out, dl = topics
    rng = np.random.default_rng(1)
    producer = producer_factory(
        {"compression_type": None, "batch_size": 2 * 1024 * 1024, "linger_ms": 2000}
    )
    n = 400
    for i in range(n):  # ~3 KB noise PNGs in one ~1.2 MB batch; fetches of ~70 KB
        png = codecs.encode_png(rng.integers(0, 256, (32, 32), dtype=np.uint8))
        producer.send(inp, value=png, headers=codecs.image_headers("image/png", f"cam-{i}", i))
    producer.flush(30)
    agent_thread(
        bundle=digits_bundles["int8"], **topics.config(), max_message_bytes=4000, client=client
    )
    reader = topic_reader(out, dl)
    reader.until(lambda r: r.count(out) >= n, 60, f"{n} results")
    assert reader.count(dl) == 0
