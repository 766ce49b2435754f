"""Sample capture on the real broker: samples carry the documented fields, the input as
received and the prediction; a flood of low-confidence inputs stays within the rate; the
trainer's ``kafka:TOPIC`` capture reads the samples back as a labelled dataset, labelled
from a feedback topic where it has a label."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream import codecs, topics
from stream.bundle import read_manifest
from stream.datasets import load_dataset
from stream.kafka import ensure_topics
from stream.preprocessing import SequencePreprocessing
from stream.schemas import Feedback
from tests.fixtures.agent import CLIENTS
from trainer.capture import capture_topic
from trainer.feedback import read_feedback

pytestmark = pytest.mark.integration

RATE = 4.0
BURST = 4


def start_sampling_agent(
    agent_topics: Any,
    unique_topic: Any,
    agent_thread: Any,
    kafka_settings: Any,
    bundle: Path,
    kind: str,
    **kw: Any,
) -> tuple[Any, str, str, str]:
    """An agent on fresh topics whose every result counts as low-confidence (a score below
    1.0) and with no random share; returns the agent and its input, results and samples
    topics."""
    topics = agent_topics(kind)
    smp = unique_topic("samples")
    ensure_topics(kafka_settings, [smp], partitions=1)
    agent = agent_thread(
        bundle=bundle,
        **topics.config(),
        samples_topic=smp,
        low_confidence=1.0,
        samples_random_share=0.0,
        **kw,
    )
    return agent, topics.input, topics.output, smp


def test_a_low_confidence_flood_is_sampled_within_the_rate(
    kafka_settings: Any,
    agent_topics: Any,
    unique_topic: Any,
    agent_thread: Any,
    topic_reader: Any,
    producer_factory: Any,
    digits_bundles: dict[str, Path],
) -> None:
    bundle = digits_bundles["int8"]
    manifest = read_manifest(bundle)
    assert manifest.reference is not None  # the trainer wrote the reference statistics
    # Every result counts as low-confidence: a flood of candidates.
    agent, inp, out, smp = start_sampling_agent(
        agent_topics,
        unique_topic,
        agent_thread,
        kafka_settings,
        bundle,
        "images",
        samples_per_s=RATE,
        samples_burst=BURST,
        samples_device_per_min=10_000.0,
    )
    started = time.time() * 1000
    ds = load_dataset("digits")
    images, labels = ds.x_test, [ds.labels[i] for i in ds.y_test]
    producer = producer_factory()
    sent: dict[int, tuple[bytes, list[tuple[str, bytes]]]] = {}
    offset = 0
    for _step in range(20):  # ~40 images every 0.2 s for ~4 s
        for _ in range(40):
            i = offset % len(images)
            value = codecs.encode_png(images[i])
            headers = codecs.image_headers(
                "image/png", f"cam-{i % 7}", int(time.time() * 1000), labels[i]
            )
            producer.send(inp, value=value, key=f"cam-{i % 7}".encode(), headers=headers)
            sent[offset] = (value, headers)
            offset += 1
        producer.flush()
        time.sleep(0.2)
    reader = topic_reader(out, smp)
    reader.until(lambda r: r.count(out) >= len(sent), 90, f"{len(sent)} results")
    assert agent.stop() == 0
    finished = time.time() * 1000
    reader.poll()

    samples = reader.records[smp]
    # Bounded: the bucket starts full, then refills at RATE per second.
    elapsed_s = (finished - started) / 1000
    assert 0 < len(samples) <= BURST + RATE * elapsed_s
    assert len(samples) >= RATE * 3  # and capture went on through the flood
    stamps = sorted(r.timestamp for r in samples)
    for i in range(len(stamps)):
        for j in range(i, len(stamps)):
            # Any stretch between two samples (1 ms of timestamp rounding at each end).
            assert j - i + 1 <= BURST + RATE * (stamps[j] - stamps[i] + 2) / 1000

    results = {
        r.source["offset"]: r for r in (codecs.decode_result(x.value) for x in reader.records[out])
    }
    for rec in samples:
        s = codecs.decode_sample(rec.value, rec.headers)
        value, headers = sent[s.source_offset]
        assert rec.value == value, "the input's bytes, unchanged"
        assert rec.key == headers[1][1]  # keyed by device id
        assert s.headers == codecs.headers_dict(headers), "the input's own headers, unchanged"
        assert s.reason == "low_confidence" and s.agent_id == "thread-agent-0"
        assert (s.model, s.version) == (manifest.name, manifest.version)
        assert (s.source_topic, s.source_partition) == (inp, 0)
        assert s.source_last_offset == s.source_offset
        result = results[s.source_offset]
        assert s.label == result.label and s.score == pytest.approx(result.score, abs=1e-6)
        assert set(s.scores) == set(manifest.labels)
        assert s.drift is not None and s.drift >= 0
    assert agent.sample("edge_agent_samples_total", {"reason": "low_confidence"}) == len(samples)
    assert (agent.sample("edge_agent_samples_skipped_total", {"reason": "rate_limited"}) or 0) > 0
    agent.pipeline.monitoring.publish()
    served = {"model": manifest.name, "version": manifest.version}
    assert agent.sample("edge_agent_result_confidence_count", served) == len(sent)
    assert agent.sample("edge_agent_low_confidence_ratio", served) == 1.0
    drift = agent.sample("edge_agent_input_drift_score", served)
    assert drift is not None and 0 <= drift < 0.25  # the test split looks like the training data

    # What the trainer's kafka:TOPIC capture makes of the samples: labelled images.
    data = capture_topic(smp, settings=kafka_settings, test_fraction=0.25)
    assert data.kind == "image" and len(data.x_train) + len(data.x_test) == len(samples)
    assert set(data.labels) <= set(ds.labels)


@pytest.mark.parametrize("client", CLIENTS)
def test_sensor_window_samples_carry_their_readings(
    client: str,
    kafka_settings: Any,
    agent_topics: Any,
    unique_topic: Any,
    agent_thread: Any,
    topic_reader: Any,
    producer_factory: Any,
    motions_bundles: dict[str, Path],
) -> None:
    bundle = motions_bundles["float32"]
    prep = read_manifest(bundle).preprocessing
    assert isinstance(prep, SequencePreprocessing)
    agent, inp, out, smp = start_sampling_agent(
        agent_topics,
        unique_topic,
        agent_thread,
        kafka_settings,
        bundle,
        "sensors",
        client=client,
        samples_per_s=100.0,
        samples_burst=100,
        samples_device_per_min=100.0,
    )
    ds = load_dataset("basic-motions")
    # Two windows of each class, each from its own device, one reading per message.
    picks = [int(i) for c in range(len(ds.labels)) for i in np.flatnonzero(ds.y_test == c)[:2]]
    producer = producer_factory()
    readings: dict[str, np.ndarray] = {}
    first: dict[str, int] = {}
    offset = 0
    for n, i in enumerate(picks):
        device = f"watch-{n}"
        window = ds.x_test[i][: prep.window].astype(np.float32)
        readings[device], first[device] = window, offset
        for t, row in enumerate(window):
            ts = 1_718_000_000_000 + t
            producer.send(
                inp,
                value=codecs.encode_reading(device, ts, row.tolist()),
                key=device.encode(),
                headers=codecs.sensor_headers(device, ts, label=ds.labels[ds.y_test[i]]),
            )
            offset += 1
    producer.flush()
    reader = topic_reader(out, smp)
    reader.until(lambda r: r.count(out) >= len(picks), 90, f"{len(picks)} results")
    # Low-confidence means a top-class score below 1.0 here: every window not scored 1.0.
    results = [codecs.decode_result(r.value) for r in reader.records[out]]
    wanted = {r.source["first_offset"] for r in results if r.score < 1.0}
    assert len(wanted) >= 2, "the model is too sure of these windows for this test"
    reader.until(lambda r: r.count(smp) >= len(wanted), 30, f"{len(wanted)} samples")
    assert agent.stop() == 0
    reader.poll()
    got = [codecs.decode_sample(r.value, r.headers).source_offset for r in reader.records[smp]]
    assert sorted(got) == sorted(wanted)
    n = len(wanted)
    for rec in reader.records[smp]:
        s = codecs.decode_sample(rec.value, rec.headers)
        chunk = codecs.decode_sensor_record(rec.value, rec.headers, channels=prep.channels)
        assert (chunk.samples == readings[chunk.device_id]).all(), "the window's readings"
        assert rec.key == chunk.device_id.encode()
        start = first[chunk.device_id]
        assert (s.source_offset, s.source_last_offset) == (start, start + prep.window - 1)
        assert s.headers[topics.H_LABEL] == ds.labels[ds.y_test[picks[int(chunk.device_id[6:])]]]
        assert s.reason == "low_confidence" and s.drift is not None
    data = capture_topic(smp, settings=kafka_settings, window=prep.window, test_fraction=0.5)
    assert data.kind == "sequence" and data.x_train.shape[1:] == (prep.window, prep.channels)
    assert len(data.x_train) + len(data.x_test) == n

    # Feedback names a window by its last reading (the offset its result names) and wins
    # over the label header: relabel every window as the next class.
    fb = unique_topic("feedback")
    ensure_topics(kafka_settings, [fb], partitions=1)
    relabelled: list[str] = []
    for rec in reader.records[smp]:
        s = codecs.decode_sample(rec.value, rec.headers)
        label = ds.labels[(ds.labels.index(s.headers[topics.H_LABEL]) + 1) % len(ds.labels)]
        relabelled.append(label)
        feedback = Feedback(
            source_topic=inp, source_partition=0, source_offset=s.source_last_offset, label=label
        )
        producer.send(fb, value=codecs.encode_feedback(feedback), key=rec.key)
    producer.flush()
    labels = read_feedback(fb, settings=kafka_settings, max_messages=100, timeout_s=30)
    joined = capture_topic(smp, settings=kafka_settings, feedback=labels, test_fraction=0.5)
    y = np.concatenate([joined.y_train, joined.y_test])
    assert sorted(joined.labels[i] for i in y) == sorted(relabelled)
    assert joined.capture["labelled_by"] == {"feedback": n, "header": 0}
