"""Retraining from the field on the real broker: a real agent captures samples to a
``samples`` topic, a labeller answers some of them on a ``feedback`` topic, and
``edgeinfer train --dataset kafka:SAMPLES --labels-from FEEDBACK --mix digits --like BUNDLE``
writes a signed candidate of the serving model that verifies with the public key, has its
geometry, labels and name and a newer version, and whose report counts what was joined."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream import codecs
from stream.bundle import read_manifest, verify_bundle
from stream.datasets import load_dataset
from stream.exceptions import BundleError
from stream.kafka import ensure_topics
from stream.keys import generate_keys, load_public_key
from stream.schemas import Feedback
from tests.fixtures.cli import edgeinfer
from tests.integration.test_agent_samples import start_sampling_agent
from trainer.capture import capture_topic
from trainer.feedback import read_feedback
from trainer.retrain import DEFAULT_MIX_SHARE

pytestmark = pytest.mark.integration

IMAGES = 40
#: Every UNANSWERED-th captured sample gets no feedback (and has no label header).
UNANSWERED = 5


@pytest.mark.slow
def test_a_candidate_is_retrained_from_captured_samples_and_feedback(
    tmp_path: Path,
    kafka_settings: Any,
    agent_topics: Any,
    unique_topic: Any,
    agent_thread: Any,
    topic_reader: Any,
    producer_factory: Any,
    digits_bundles: dict[str, Path],
) -> None:
    serving = digits_bundles["int8"]
    manifest = read_manifest(serving)
    agent, inp, out, smp = start_sampling_agent(
        agent_topics, unique_topic, agent_thread, kafka_settings, serving, "images",
        samples_per_s=500.0, samples_burst=500, samples_device_per_min=100_000.0,
    )  # fmt: skip
    ds = load_dataset("digits")
    truth: dict[int, str] = {}
    producer = producer_factory()
    for offset in range(IMAGES):
        # No label header: the labels come from feedback only.
        producer.send(
            inp,
            value=codecs.encode_png(ds.x_test[offset]),
            key=b"cam-1",
            headers=codecs.image_headers("image/png", "cam-1", 1_718_000_000_000 + offset),
        )
        truth[offset] = ds.labels[ds.y_test[offset]]
    producer.flush()
    reader = topic_reader(out, smp)
    reader.until(lambda r: r.count(out) >= IMAGES, 90, f"{IMAGES} results")
    # Every result counts as low-confidence (an int8 score is below 1.0): all are sampled.
    reader.until(lambda r: r.count(smp) >= IMAGES, 30, f"{IMAGES} samples")
    assert agent.stop() == 0
    sampled = sorted(
        codecs.decode_sample(r.value, r.headers).source_offset for r in reader.records[smp]
    )
    assert sampled == list(range(IMAGES))

    # A labeller answers all but every UNANSWERED-th sample; one message is garbage and one
    # labels an input nobody sampled.
    fb = unique_topic("feedback")
    ensure_topics(kafka_settings, [fb], partitions=1)
    answered = [o for o in sampled if o % UNANSWERED]
    for offset in answered:
        label = Feedback(source_topic=inp, source_partition=0, source_offset=offset,
                         label=truth[offset], by="test")  # fmt: skip
        producer.send(fb, value=codecs.encode_feedback(label), key=b"cam-1")
    producer.send(fb, value=b"{not json", key=b"cam-1")
    stray = Feedback(source_topic=inp, source_partition=0, source_offset=10_000, label="3")
    producer.send(fb, value=codecs.encode_feedback(stray), key=b"cam-1")
    producer.flush()

    # The join, read back directly: every answered sample has its true label.
    data = capture_topic(
        smp,
        settings=kafka_settings,
        feedback=read_feedback(fb, settings=kafka_settings, max_messages=1000, timeout_s=30),
        test_fraction=0.25,
    )
    got = sorted(data.labels[i] for i in np.concatenate([data.y_train, data.y_test]))
    assert got == sorted(truth[o] for o in answered)

    keys = tmp_path / "keys"
    generate_keys(keys / "edgeinfer.key", keys / "edgeinfer.pub")
    run = tmp_path / "candidate"
    common = [
        "train", "--dataset", f"kafka:{smp}", "--labels-from", fb, "--mix", "digits",
        "--like", str(serving), "--arch", "cnn", "--filters", "8,16", "--units", "16",
        "--epochs", "6", "--variants", "float32", "--quiet", "--out", str(run),
        "--key", str(keys / "edgeinfer.key"),
        "--bootstrap-servers", kafka_settings.bootstrap_servers,
    ]  # fmt: skip
    refused = edgeinfer(*common, "--version", manifest.version)
    assert refused.returncode == 2
    assert f"does not sort after {manifest.version}" in refused.stderr
    trained = edgeinfer(*common, "--version", "2")
    assert trained.returncode == 0, trained.stdout + trained.stderr[-3000:]
    assert f"{len(answered)} from feedback" in trained.stdout

    bundle = verify_bundle(
        run / "bundles" / "float32", public_key=load_public_key(keys / "edgeinfer.pub")
    )
    candidate = bundle.manifest
    assert (candidate.name, candidate.version) == (manifest.name, "2")
    assert candidate.labels == manifest.labels
    cp, sp = candidate.preprocessing.to_dict(), manifest.preprocessing.to_dict()
    for key in ("kind", "height", "width", "channels", "color"):
        assert cp[key] == sp[key]
    with pytest.raises(BundleError, match="signature"):  # only our key verifies it
        verify_bundle(run / "bundles" / "float32", public_key=other_key(tmp_path))

    report = json.loads((run / "report.json").read_text())
    capture = report["capture"]
    assert capture["messages"] == IMAGES
    assert capture["inputs"] == len(answered)
    assert capture["labelled_by"] == {"feedback": len(answered), "header": 0}
    assert capture["skipped"]["unlabelled"] == IMAGES - len(answered)
    assert capture["feedback"] == {
        "topic": fb, "messages": len(answered) + 2, "inputs_labelled": len(answered) + 1,
        "matched": len(answered), "unmatched": 1, "undecodable": 1, "relabelled": 0,
    }  # fmt: skip
    mix = capture["mix"]
    assert mix["dataset"] == "digits" and mix["share"] == DEFAULT_MIX_SHARE
    assert mix["train"]["field"] + mix["test"]["field"] == len(answered)
    assert mix["train"]["mix"] == len(ds.x_train)
    retrain = report["retrain"]
    assert retrain["like"]["version"] == manifest.version
    by_part = retrain["test_accuracy"]
    assert by_part["field"]["samples"] == mix["test"]["field"] > 0
    assert by_part["mix"]["samples"] == len(ds.x_test)
    assert report["test_samples"] == by_part["field"]["samples"] + by_part["mix"]["samples"]
    assert report["keras"]["accuracy"] > 0.5  # 6 small epochs: learning, not a goal


def other_key(tmp_path: Path) -> Any:
    generate_keys(tmp_path / "other.key", tmp_path / "other.pub")
    return load_public_key(tmp_path / "other.pub")
