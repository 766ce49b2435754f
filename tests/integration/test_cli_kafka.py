"""The Kafka subcommands run as real processes against the session broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream.announcements import materialize, parse_announcement
from stream.bundle import verify_bundle
from stream.settings import KafkaSettings
from tests.fixtures.broker import ConsumerFactory, UniqueTopic, consume
from tests.fixtures.bundle_factory import write_test_bundle

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _edgeinfer(settings: KafkaSettings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    env["EDGE_BOOTSTRAP_SERVERS"] = settings.bootstrap_servers
    return subprocess.run(
        [sys.executable, "-m", "stream", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_topics_ensure_and_list(kafka_settings: KafkaSettings, unique_topic: UniqueTopic) -> None:
    a, b = unique_topic("a"), unique_topic("b")
    first = _edgeinfer(kafka_settings, "topics", "ensure", "--topic", a, "--topic", b)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [f"{a}: created", f"{b}: created"]
    again = _edgeinfer(kafka_settings, "topics", "ensure", "--topic", a, "--partitions", "2")
    assert again.stdout.splitlines() == [f"{a}: exists"]
    listing = _edgeinfer(kafka_settings, "topics", "list")
    assert f"{a}\t4 partitions" in listing.stdout.splitlines()


def test_replay_then_tail(kafka_settings: KafkaSettings, unique_topic: UniqueTopic) -> None:
    topic = unique_topic("cli")
    replay = _edgeinfer(
        kafka_settings,
        "replay",
        "sensors",
        "--dataset",
        "basic-motions",
        "--topic",
        topic,
        "--limit",
        "3",
        "--rate",
        "0",
    )
    assert replay.returncode == 0, replay.stderr
    assert f"replayed 300 readings from 3 devices to '{topic}'" in replay.stdout
    tail = _edgeinfer(kafka_settings, "tail", topic, "--from-beginning", "--max", "4")
    assert tail.returncode == 0, tail.stderr
    lines = tail.stdout.splitlines()
    assert len(lines) == 8  # two lines per message
    assert all(line.startswith(f"{topic}[") for line in lines[::2])
    assert all(line.startswith("  sensor 1x6 {") for line in lines[1::2])


def test_publish_announces_on_the_models_topic(
    kafka_settings: KafkaSettings,
    unique_topic: UniqueTopic,
    consumer_factory: ConsumerFactory,
    tmp_path: Path,
) -> None:
    topic = unique_topic("models")
    registry = tmp_path / "registry"
    small = write_test_bundle(tmp_path / "small", name="motion", version="1")
    big = write_test_bundle(tmp_path / "big", name="motion", version="2", model=b"m" * 4000)
    outputs = []
    for bundle, extra in ((small, []), (big, ["--inline-limit", "3000"])):
        proc = _edgeinfer(
            kafka_settings,
            "publish",
            str(bundle.path),
            "--registry",
            str(registry),
            "--topic",
            topic,
            *extra,
        )
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout)
    assert f"registry: {registry / 'motion' / '1'}" in outputs[0]
    assert f"announced motion 1 on '{topic}' (inline)" in outputs[0]
    assert f"announced motion 2 on '{topic}' (by reference file://" in outputs[1]

    records = sorted(consume(consumer_factory(topic), 2), key=lambda r: (r.partition, r.offset))
    assert {r.key for r in records} == {b"motion"}
    assert len({r.partition for r in records}) == 1  # keyed by model name
    first, second = (parse_announcement(r.value) for r in records)
    assert (first.version, first.model_b64 is not None) == ("1", True)
    assert second.version == "2"
    assert second.uri == (registry / "motion" / "2").resolve().as_uri()
    for ann, source in ((first, small), (second, big)):
        out = materialize(ann, tmp_path / "agent" / ann.version)
        assert verify_bundle(out).model_bytes() == source.model_bytes()
