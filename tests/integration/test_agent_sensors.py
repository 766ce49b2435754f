"""The agent on sensor streams: per-device windows from a real BasicMotions replay."""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.bundle import read_manifest
from stream.datasets import load_dataset
from stream.preprocessing import SequencePreprocessing
from stream.replay import replay_sensors
from tests.fixtures.agent import CLIENTS

pytestmark = pytest.mark.integration
logger = logging.getLogger(__name__)


def windows_per_recording(length: int, window: int, stride: int) -> int:
    return 0 if length < window else (length - window) // stride + 1


@pytest.mark.parametrize("client", CLIENTS)
def test_basic_motions_replay_gives_the_expected_windows_per_device(
    client: str, kafka_settings: Any, streaming_agent: Any, motions_bundles: dict[str, Path]
) -> None:
    bundle = motions_bundles["int8"]
    manifest = read_manifest(bundle)
    prep = manifest.preprocessing
    assert isinstance(prep, SequencePreprocessing)
    ds = load_dataset("basic-motions")
    devices, length = ds.x_test.shape[0], ds.x_test.shape[1]
    per_device = windows_per_recording(length, prep.window, prep.stride)
    assert per_device >= 1
    run = streaming_agent(bundle, kind="sensors", partitions=2, client=client)
    agent, reader, inp, dl = run.agent, run.reader, run.topics.input, run.topics.deadletter

    stats = replay_sensors(kafka_settings, "basic-motions", topic=inp, rate=0, partitions=None)
    assert stats.sent == devices * length
    expected = devices * per_device
    run.until(results=expected, timeout_s=120)
    assert agent.stop() == 0
    run.drain()

    results = run.results()
    assert reader.count(dl) == 0
    by_device: dict[str, list[Any]] = defaultdict(list)
    for r in results:
        by_device[r.device_id].append(r)
    assert len(by_device) == devices
    assert {d: len(rs) for d, rs in by_device.items()} == {d: per_device for d in by_device}
    for rs in by_device.values():
        partitions = {r.source["partition"] for r in rs}
        assert len(partitions) == 1  # keyed by device: one partition
        for r in rs:
            src = r.source
            assert src["first_offset"] < src["last_offset"] == src["offset"]
            assert r.true_label in ds.labels
            assert set(r.scores) == set(manifest.labels)
    accuracy = float(np.mean([r.label == r.true_label for r in results]))
    logger.info(
        "basic-motions int8 window=%d stride=%d: %d windows, accuracy=%.4f manifest=%.4f",
        prep.window,
        prep.stride,
        len(results),
        accuracy,
        float(manifest.metrics["accuracy"]),
    )
    if prep.window == length:  # one window = one test recording: the trainer's accuracy
        # 40 recordings: one flipped near-tie (batched int8 kernels) is 0.025
        assert accuracy == pytest.approx(float(manifest.metrics["accuracy"]), abs=0.03)

    v = agent.sample
    assert v("edge_agent_messages_consumed_total", {"topic": inp}) == stats.sent
    assert v("edge_agent_batch_size_sum", {"model": manifest.name}) == expected
    open_windows = v("edge_agent_windows_open")  # devices tracked, at most one each
    assert open_windows is not None and 0 <= open_windows <= devices
