"""A ``kafka:`` topic larger than the trainer's memory limit trains: it is streamed from
the broker every epoch (``--cache none``), never decoded into memory (issue 15, item 3).

Marked ``long`` (``make test-long``): 2-4 minutes on 2 cores. ``make test`` keeps the
folder version of the same proof (tests/unit/test_trainer_memory.py) and the streamed
topic's correctness (tests/integration/test_trainer_kafka_stream.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.codecs import encode_jpeg, image_headers
from stream.kafka import ensure_topics
from tests.unit.test_trainer_memory import HEIGHT, IMAGES, LIMIT, WIDTH, big_images, limited

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.long]
pytest.importorskip("tensorflow")


def big_topic(producer: Any, topic: str) -> int:
    """600 JPEGs of 1024x768 RGB (~90 KB each); returns their decoded size in bytes."""
    for i, (label, img) in enumerate(big_images()):
        producer.send(
            topic,
            value=encode_jpeg(np.asarray(img), quality=85),
            key=f"cam-{i % 4}".encode(),
            headers=image_headers("image/jpeg", f"cam-{i % 4}", 1_718_000_000_000 + i, label),
        )
    producer.flush()
    return IMAGES * HEIGHT * WIDTH * 3


def test_a_topic_larger_than_the_memory_limit_trains(
    tmp_path: Path, kafka_settings: Any, unique_topic: Any, producer_factory: Any
) -> None:
    topic = unique_topic("frames")
    ensure_topics(kafka_settings, [topic], partitions=2)
    producer = producer_factory({"max_request_size": 4 * 1024 * 1024})
    decoded = big_topic(producer, topic)
    assert decoded > LIMIT * 1.2

    out = tmp_path / "run"
    argv = [
        "train", "--dataset", f"kafka:{topic}", "--cache", "none", "--image-size", "32x32",
        "--arch", "cnn", "--filters", "8,16", "--units", "16", "--epochs", "2",
        "--variants", "float32", "--quiet", "--out", str(out),
        "--bootstrap-servers", kafka_settings.bootstrap_servers, "--capture-timeout", "300",
    ]  # fmt: skip
    run = limited(f"from stream.cli import main; sys.exit(main({argv!r}))", tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    peak = report["peak_rss_bytes"]
    print(f"decoded topic {decoded / 2**30:.2f} GiB, limit {LIMIT / 2**30:.2f} GiB, "
          f"trainer peak RSS {peak / 2**30:.2f} GiB")  # fmt: skip
    # As for folders (tests/unit/test_trainer_memory.py, whose control shows the limit
    # bites): the proof is training under a data limit below the decoded size.
    assert peak > 0
    assert report["capture"]["inputs"] == IMAGES
    assert report["keras"]["accuracy"] >= 0.9
    assert json.loads((out / "run.json").read_text())["data"]["streamed"] is True
