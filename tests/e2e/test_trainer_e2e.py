"""End to end through the real commands: keys -> train (npz never seen before) -> export ->
verify -> publish to a registry folder and the models topic on the real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.announcements import parse_announcement
from stream.registry import Registry
from stream.settings import KafkaSettings
from tests.fixtures.broker import consume

pytestmark = [pytest.mark.slow, pytest.mark.integration]
pytest.importorskip("tensorflow")


def edgeinfer(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "EDGE_LOG_LEVEL": "WARNING"},
    )
    return proc


def sensor_npz(path: Path) -> Path:
    """Unseen sensor data: 5 channels x 40 steps, 3 classes told apart by frequency."""
    rng = np.random.default_rng(1)
    n, t = 150, 40
    y = np.arange(n) % 3
    time = np.linspace(0, 1, t)
    x = rng.normal(0, 0.3, size=(n, t, 5))
    for i, c in enumerate(y):
        x[i, :, 0] += np.sin(2 * np.pi * (c + 1) * 2 * time + rng.uniform(0, 3))
        x[i, :, 3] += 0.3 * c
    np.savez(path, x=x.astype(np.float32), y=y, labels=np.array(["slow", "mid", "fast"]))
    return path


def test_train_export_verify_publish(
    tmp_path: Path,
    kafka_settings: KafkaSettings,
    unique_topic: Callable[[str], str],
    consumer_factory: Callable[..., Any],
) -> None:
    keys = tmp_path / "keys"
    assert edgeinfer("keys", "generate", "--out", str(keys)).returncode == 0
    private, public = keys / "edgeinfer.key", keys / "edgeinfer.pub"
    data = sensor_npz(tmp_path / "vibration.npz")
    run = tmp_path / "run"

    trained = edgeinfer(
        "train", "--dataset", f"npz:{data}", "--arch", "gru", "--epochs", "25",
        "--batch-size", "16", "--seed", "1", "--out", str(run), "--name", "vibration",
        "--version", "1", "--key", str(private), "--quiet", "--stride", "10",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "training on the CPU" in trained.stdout
    report = json.loads((run / "report.json").read_text())
    assert report["keras"]["accuracy"] >= 0.9
    # a GRU also gets the int8-loop variant (recurrent int8, docs/trainer.md)
    assert set(report["variants"]) == {"float32", "float16", "dynamic", "int8", "int8-loop"}
    for variant, entry in report["variants"].items():
        assert entry.get("error") is None, (variant, entry)
        assert {"accuracy", "macro_f1", "size_bytes", "latency_ms", "ops", "publishable"} <= set(
            entry
        )
        assert (run / "bundles" / variant / "model.tflite").is_file()
        assert (run / "plots" / f"confusion_{variant}.png").is_file()
    assert report["recommended"] in report["variants"]
    assert "| variant | accuracy |" in (run / "report.md").read_text()

    manifest = json.loads((run / "bundles" / "int8" / "manifest.json").read_text())
    assert manifest["name"] == "vibration" and manifest["version"] == "1"
    assert manifest["labels"] == ["slow", "mid", "fast"]
    assert manifest["preprocessing"]["window"] == 40
    assert manifest["preprocessing"]["stride"] == 10
    assert manifest["input"]["dtype"] == "int8" and manifest["input"]["shape"] == [None, 40, 5]
    assert manifest["input"]["scale"] > 0
    assert manifest["signature"]["algorithm"] == "ed25519"
    assert set(manifest["metrics"]["variants"]) == set(report["variants"])

    exported = edgeinfer(
        "export", "--model", str(run / "model.keras"), "--variants", "int8,float16",
        "--version", "2", "--key", str(private), "--out", str(tmp_path / "v2"),
    )  # fmt: skip
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert "recommended variant:" in exported.stdout
    bundle = tmp_path / "v2" / "bundles" / "int8"
    assert json.loads((bundle / "manifest.json").read_text())["version"] == "2"

    verified = edgeinfer("verify", str(bundle), "--key", str(public))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("OK vibration 2 int8")

    topic = unique_topic("models")
    registry = tmp_path / "registry"
    published = edgeinfer(
        "publish", str(bundle), "--registry", str(registry), "--topic", topic,
        "--key", str(public), "--bootstrap-servers", kafka_settings.bootstrap_servers,
    )  # fmt: skip
    assert published.returncode == 0, published.stdout + published.stderr
    assert Registry(registry).versions("vibration") == ["2"]

    records = consume(consumer_factory(topic), 1)
    assert records[0].key == b"vibration"
    announcement = parse_announcement(records[0].value)
    assert (announcement.name, announcement.version) == ("vibration", "2")
    assert announcement.manifest["model_sha256"] == manifest_sha(bundle)


def manifest_sha(bundle: Path) -> str:
    return str(json.loads((bundle / "manifest.json").read_text())["model_sha256"])


def test_kafka_topic_sensor_capture_equals_the_replayed_data(
    tmp_path: Path, kafka_settings: KafkaSettings, unique_topic: Callable[[str], str]
) -> None:
    from stream.datasets import load_dataset
    from stream.replay import replay_sensors
    from trainer.capture import capture_topic

    topic = unique_topic("sensors")
    replay_sensors(kafka_settings, "basic-motions", topic=topic, rate=0, split="train")
    ds = capture_topic(topic, settings=kafka_settings, seed=0)
    original = load_dataset("basic-motions")
    assert ds.kind == "sequence"
    assert ds.labels == original.labels
    x = np.concatenate([ds.x_train, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_test])
    assert x.shape == (40, 100, 6)
    # Every captured window is one replayed recording, bit for bit, with its label.
    for window, label in zip(x, y, strict=True):
        match = [i for i in range(40) if np.array_equal(original.x_train[i], window)]
        assert len(match) == 1 and original.y_train[match[0]] == label

    halves = capture_topic(topic, settings=kafka_settings, window=50)
    assert len(halves.x_train) + len(halves.x_test) == 80
    assert halves.x_train.shape[1:] == (50, 6)

    trained = edgeinfer(
        "train", "--dataset", f"kafka:{topic}", "--arch", "conv1d", "--epochs", "2",
        "--no-export", "--quiet", "--out", str(tmp_path / "run"),
        "--bootstrap-servers", kafka_settings.bootstrap_servers,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stdout + trained.stderr
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["dataset"] == f"kafka:{topic}" and run["preprocessing"]["window"] == 100


def test_kafka_topic_image_capture(
    kafka_settings: KafkaSettings, unique_topic: Callable[[str], str]
) -> None:
    from stream.datasets import load_dataset
    from stream.exceptions import DatasetError
    from stream.replay import replay_images
    from trainer.capture import capture_topic

    topic = unique_topic("images")
    replay_images(kafka_settings, "digits", topic=topic, rate=0, split="test", limit=60)
    ds = capture_topic(topic, settings=kafka_settings)
    original = load_dataset("digits")
    assert ds.kind == "image"
    assert ds.x_train.shape[1:] == (8, 8, 1) and ds.x_train.dtype == np.uint8
    assert len(ds.x_train) + len(ds.x_test) == 60
    sample = ds.x_test[0]
    assert any(np.array_equal(sample, im) for im in original.x_test[:60])

    empty = unique_topic("empty")
    from stream.kafka import ensure_topics

    ensure_topics(kafka_settings, [empty], partitions=1)
    with pytest.raises(DatasetError, match="is empty"):
        capture_topic(empty, settings=kafka_settings, timeout_s=10)
