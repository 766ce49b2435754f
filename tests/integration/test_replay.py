"""Replayers and tail against the real broker: everything sent is read back and checked."""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from functools import cache

import numpy as np
import pytest

from stream.codecs import decode_image, decode_sensor, headers_dict
from stream.datasets import Dataset, load_dataset
from stream.drift import Drift
from stream.exceptions import ConfigError, DatasetError
from stream.kafka import list_topics
from stream.replay import replay_images, replay_sensors
from stream.settings import KafkaSettings
from stream.tail import tail
from tests.fixtures.broker import ConsumerFactory, UniqueTopic, consume

pytestmark = pytest.mark.integration


@cache
def _basic_motions() -> Dataset:
    return load_dataset("basic-motions")


@cache
def _digits() -> Dataset:
    return load_dataset("digits")


def test_basic_motions_test_split_reads_back_in_order(
    kafka_settings: KafkaSettings, unique_topic: UniqueTopic, consumer_factory: ConsumerFactory
) -> None:
    ds = _basic_motions()
    n_devices, steps, channels = ds.x_test.shape[0], ds.x_test.shape[1], ds.x_test.shape[2]
    assert (n_devices, steps, channels) == (40, 100, 6)
    topic = unique_topic("sensors")
    progress: list[tuple[int, int | None]] = []
    stats = replay_sensors(
        kafka_settings,
        ds,
        topic=topic,
        rate=0,
        partitions=4,
        progress=lambda sent, total, _elapsed: progress.append((sent, total)),
        progress_interval_s=0.0,
    )
    assert (stats.sent, stats.devices, stats.topic) == (4000, 40, topic)
    assert progress and progress[-1][1] == 4000
    assert list_topics(kafka_settings)[topic] == 4

    records = consume(consumer_factory(topic), 4000, timeout_s=60)
    assert len(records) == 4000
    by_device: dict[str, list] = defaultdict(list)
    partitions_of: dict[str, set[int]] = defaultdict(set)
    for r in records:
        device = r.key.decode()
        by_device[device].append(r)
        partitions_of[device].add(r.partition)
    assert sorted(by_device) == [f"bm-test-{i:03d}" for i in range(40)]
    assert len({p for ps in partitions_of.values() for p in ps}) > 1  # spread over partitions
    for index in range(n_devices):
        device = f"bm-test-{index:03d}"
        rows = by_device[device]
        assert len(rows) == steps
        assert len(partitions_of[device]) == 1  # keyed: one device, one partition
        rows.sort(key=lambda r: r.offset)  # consumption order within the partition
        chunks = [decode_sensor(r.value) for r in rows]
        ts = [c.ts for c in chunks]
        assert all(b > a for a, b in zip(ts, ts[1:], strict=False)), device
        assert {c.device_id for c in chunks} == {device}
        values = np.concatenate([c.samples for c in chunks])
        np.testing.assert_allclose(values, ds.x_test[index], rtol=1e-6)
        headers = [headers_dict(r.headers) for r in rows]
        assert {h["label"] for h in headers} == {ds.labels[int(ds.y_test[index])]}
        assert [int(h["ts"]) for h in headers] == ts
    # Round-robin interleaving: in each partition, the first readings come one from each
    # of its devices before any device sends its second.
    for partition in {r.partition for r in records}:
        rows = sorted((r for r in records if r.partition == partition), key=lambda r: r.offset)
        devices_here = {r.key for r in rows}
        assert len({r.key for r in rows[: len(devices_here)]}) == len(devices_here)


@pytest.mark.parametrize("image_format", ["png", "npy"])
def test_digits_images_decode_to_the_dataset_pixels(
    kafka_settings: KafkaSettings,
    unique_topic: UniqueTopic,
    consumer_factory: ConsumerFactory,
    image_format: str,
) -> None:
    ds = _digits()
    topic = unique_topic("images")
    stats = replay_images(
        kafka_settings,
        ds,
        topic=topic,
        rate=0,
        limit=60,
        devices=3,
        image_format=image_format,  # type: ignore[arg-type]
    )
    assert (stats.sent, stats.devices) == (60, 3)
    records = consume(consumer_factory(topic), 60)
    seen = set()
    for r in records:
        headers = headers_dict(r.headers)
        frame = decode_image(r.value, r.headers)
        matches = [
            i
            for i in range(60)
            if ds.x_test[i].shape == frame.pixels.shape
            and np.array_equal(ds.x_test[i], frame.pixels)
            and ds.labels[int(ds.y_test[i])] == headers["label"]
        ]
        assert matches, f"image at offset {r.offset} matches no dataset image with its label"
        seen.update(matches)
        assert frame.device_id == r.key.decode()
        assert re.fullmatch(r"digits-cam-0[0-2]", frame.device_id or "")
        expected_type = "image/png" if image_format == "png" else "application/x-npy"
        assert headers["content-type"] == expected_type
    assert len(seen) >= 55  # (a few digits images are exact duplicates of each other)


def test_jpeg_images_are_close_to_the_dataset(
    kafka_settings: KafkaSettings, unique_topic: UniqueTopic, consumer_factory: ConsumerFactory
) -> None:
    ds = _digits()
    topic = unique_topic("jpeg")
    replay_images(kafka_settings, ds, topic=topic, rate=0, limit=5, devices=1, image_format="jpeg")
    records = sorted(consume(consumer_factory(topic), 5), key=lambda r: r.offset)
    for i, r in enumerate(records):
        frame = decode_image(r.value, r.headers)
        assert frame.content_type == "image/jpeg"
        diff = np.abs(frame.pixels.astype(int) - ds.x_test[i].astype(int)).mean()
        assert diff < 20


def test_rate_paces_the_replay(kafka_settings: KafkaSettings, unique_topic: UniqueTopic) -> None:
    started = time.monotonic()
    stats = replay_sensors(
        kafka_settings, _basic_motions(), topic=unique_topic("paced"), rate=400, limit=2
    )
    elapsed = time.monotonic() - started
    assert stats.sent == 200
    assert elapsed >= 0.45  # 200 readings at 400/s: at least ~0.5 s
    assert stats.rate <= 450


def test_repeat_and_split_all(kafka_settings: KafkaSettings, unique_topic: UniqueTopic) -> None:
    ds = _basic_motions()
    stats = replay_sensors(
        kafka_settings, ds, topic=unique_topic("rep"), rate=0, split="all", limit=3, repeat=2
    )
    assert stats.sent == 3 * 100 * 2
    assert stats.devices == 3


def test_wrong_dataset_kind_names_the_right_command(kafka_settings: KafkaSettings) -> None:
    with pytest.raises(DatasetError, match="use `edgeinfer replay images`"):
        replay_sensors(kafka_settings, _digits(), topic="unused")
    with pytest.raises(DatasetError, match="use `edgeinfer replay sensors`"):
        replay_images(kafka_settings, _basic_motions(), topic="unused")


def test_bad_arguments_are_config_errors(kafka_settings: KafkaSettings) -> None:
    with pytest.raises(ConfigError, match="split must be one of train, test, all"):
        replay_sensors(kafka_settings, _basic_motions(), split="dev")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"repeat must be >= 0 \(0 = until Ctrl-C\), got -1"):
        replay_sensors(kafka_settings, _basic_motions(), repeat=-1)
    with pytest.raises(ConfigError, match="rate must be >= 0 messages/s"):
        replay_images(kafka_settings, _digits(), rate=-5)
    with pytest.raises(ConfigError, match="image format must be one of png, jpeg, npy"):
        replay_images(kafka_settings, _digits(), image_format="gif")  # type: ignore[arg-type]


def test_tail_prints_decoded_messages(
    kafka_settings: KafkaSettings, unique_topic: UniqueTopic
) -> None:
    topic = unique_topic("tail")
    replay_sensors(kafka_settings, _basic_motions(), topic=topic, rate=0, limit=2)
    lines: list[str] = []
    count = tail(kafka_settings, topic, max_messages=5, from_beginning=True, out=lines.append)
    assert count == 5
    assert len(lines) == 5
    assert re.match(rf"{re.escape(topic)}\[\d\]@\d+ key='bm-test-00[01]' headers: ", lines[0])
    assert "label=" in lines[0]
    assert "\n  sensor 1x6 {" in lines[0]


def test_tail_without_from_beginning_shows_only_new_messages(
    kafka_settings: KafkaSettings, unique_topic: UniqueTopic
) -> None:
    topic = unique_topic("new")
    replay_images(kafka_settings, _digits(), topic=topic, rate=0, limit=20)
    lines: list[str] = []
    count = tail(kafka_settings, topic, idle_timeout_s=1.5, out=lines.append)
    assert count == 0, lines


def test_tail_with_a_group_resumes_where_it_stopped(
    kafka_settings: KafkaSettings, unique_topic: UniqueTopic
) -> None:
    topic = unique_topic("grp")
    replay_images(kafka_settings, _digits(), topic=topic, rate=0, limit=8, devices=1, partitions=1)
    group = f"{topic}-group"
    first: list[str] = []
    second: list[str] = []
    tail(
        kafka_settings, topic, max_messages=3, from_beginning=True, group_id=group, out=first.append
    )
    tail(
        kafka_settings,
        topic,
        max_messages=3,
        from_beginning=True,
        group_id=group,
        out=second.append,
    )
    assert [line.split(" ")[0] for line in first] == [f"{topic}[0]@{i}" for i in range(3)]
    assert [line.split(" ")[0] for line in second] == [f"{topic}[0]@{i}" for i in range(3, 6)]
    assert "image/png 8x8x1" in first[0]


def test_drift_changes_only_the_drifting_cameras_after_its_start(
    kafka_settings: KafkaSettings, unique_topic: UniqueTopic, consumer_factory: ConsumerFactory
) -> None:
    ds = _digits()
    topic = unique_topic("images")
    drift = Drift(kind="darken", amount=0.5, devices=0.5, after=20)
    replay_images(
        kafka_settings, ds, topic=topic, rate=0, limit=60, devices=4, drift=drift, partitions=1
    )
    records = sorted(consume(consumer_factory(topic), 60), key=lambda r: r.offset)
    changed = 0
    for i, r in enumerate(records):
        frame = decode_image(r.value, r.headers)
        original = ds.x_test[i]
        if drift.active(i, frame.device_id or ""):
            expected = (original.astype(np.float32) * 0.5).astype(np.uint8)
            changed += 1
        else:
            expected = original
        np.testing.assert_array_equal(frame.pixels, expected)
    drifting = {f"digits-cam-{c:02d}" for c in range(4) if drift.affects(f"digits-cam-{c:02d}")}
    assert changed == sum(1 for i in range(20, 60) if f"digits-cam-{i % 4:02d}" in drifting)


def test_sensor_drift_and_stop(kafka_settings: KafkaSettings, unique_topic: UniqueTopic) -> None:
    ds = _basic_motions()
    topic = unique_topic("sensors")
    stop = threading.Event()
    sent: list[int] = []

    def progress(n: int, _total: int | None, _elapsed: float) -> None:
        sent.append(n)
        if n >= 300:
            stop.set()

    stats = replay_sensors(
        kafka_settings,
        ds,
        topic=topic,
        rate=0,
        repeat=0,  # endless: only the stop event ends it
        drift=Drift(kind="offset", amount=2.0, channels=(0,)),
        stop=stop,
        progress=progress,
        progress_interval_s=0.0,
    )
    assert stats.interrupted and 300 <= stats.sent <= 301
    with pytest.raises(ConfigError, match="channels"):
        replay_sensors(kafka_settings, ds, topic=topic, drift=Drift.parse("gain:2@6"))
    with pytest.raises(ConfigError, match="applies to images"):
        replay_sensors(kafka_settings, ds, topic=topic, drift=Drift.parse("darken:0.5"))


def test_feedback_names_each_acknowledged_input_and_its_true_label(
    kafka_settings: KafkaSettings, unique_topic: UniqueTopic, consumer_factory: ConsumerFactory
) -> None:
    from stream.codecs import decode_feedback

    topic, labels = unique_topic("images"), unique_topic("feedback")
    stats = replay_images(
        kafka_settings,
        _digits(),
        topic=topic,
        rate=0,
        limit=120,
        partitions=3,
        feedback=labels,
        feedback_delay_s=0.2,
    )
    assert (stats.sent, stats.feedback, stats.feedback_topic) == (120, 120, labels)
    assert f"120 true labels to {labels!r}" in stats.summary("images")
    inputs = {(r.topic, r.partition, r.offset): r for r in consume(consumer_factory(topic), 120)}
    records = consume(consumer_factory(labels), 120)
    feedback = [decode_feedback(r.value, r.headers) for r in records]
    # One feedback per input: its source is where the input landed, its label the input's
    # label header, its key the input's key (the device id).
    assert {f.source for f in feedback} == set(inputs)
    for record, f in zip(records, feedback, strict=True):
        source = inputs[f.source]
        assert f.label == headers_dict(source.headers)["label"]
        assert record.key == source.key and f.by == "replay" and f.ts is not None
    # A share of the inputs, chosen at random: about that many, reproducibly.
    half = unique_topic("feedback")
    sensor_stats = replay_sensors(
        kafka_settings, _basic_motions(), topic=unique_topic("sensors"), rate=0, limit=4,
        feedback=half, feedback_share=0.5,
    )  # fmt: skip
    assert sensor_stats.sent == 400 and 160 <= sensor_stats.feedback <= 240
    assert len(consume(consumer_factory(half), sensor_stats.feedback)) == sensor_stats.feedback


def test_bad_feedback_arguments_are_config_errors(kafka_settings: KafkaSettings) -> None:
    with pytest.raises(ConfigError, match=r"feedback share must be in \[0, 1\], got 1.5"):
        replay_images(kafka_settings, _digits(), feedback="fb", feedback_share=1.5, partitions=None)
    with pytest.raises(ConfigError, match="feedback delay must be >= 0 seconds, got -1"):
        replay_images(
            kafka_settings, _digits(), feedback="fb", feedback_delay_s=-1, partitions=None
        )
