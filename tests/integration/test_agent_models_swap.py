"""Hot swap through the whole agent on the real broker: a new version published mid-stream
takes over between batches with no input lost or answered twice; a tampered one is refused
while the old model keeps answering."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from stream.bundle import MODEL_FILE, generate_keys, load_private_key
from stream.registry import Registry
from stream.replay import replay_images
from stream.settings import KafkaSettings
from tests.fixtures.agent import CLIENTS, wait_until
from tests.integration.test_agent_models import NAME, build_tiny_models, write_tiny_bundle

pytestmark = pytest.mark.integration

IMAGES = 450  # the digits test split that replay_images sends
RATE = 120.0  # images per second: the stream lasts ~4 s, long enough to swap in the middle


@pytest.fixture
def setup(agent_topics: Any, tmp_path: Path) -> dict[str, Any]:
    pytest.importorskip("keras")
    build_tiny_models()
    generate_keys(tmp_path / "k.key", tmp_path / "k.pub")
    registry = Registry(tmp_path / "registry")
    private = load_private_key(tmp_path / "k.key")
    registry.publish(write_tiny_bundle(tmp_path / "b1", "1", private_key=private))
    topics = agent_topics(partitions=2)
    return {
        "registry": registry,
        "private": private,
        "public": tmp_path / "k.pub",
        "topics": topics,
        "tmp": tmp_path,
    }


def _start(agent_thread: Any, s: dict[str, Any], client: str = "kafka-python") -> Any:
    return agent_thread(
        registry=s["registry"].root,
        model=NAME,
        public_key=s["public"],
        **s["topics"].config(),
        model_poll_s=0.2,
        max_batch=8,
        client=client,
    )


def _replay_in_background(kafka_settings: KafkaSettings, topic: str) -> threading.Thread:
    def run() -> None:
        replay_images(kafka_settings, "digits", topic=topic, rate=RATE, partitions=None)

    thread = threading.Thread(target=run, name="replay", daemon=True)
    thread.start()
    return thread


def _results(reader: Any, topic: str) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in reader.records[topic]]


def _one_result_per_input(results: list[dict[str, Any]]) -> dict[int, list[tuple[int, str]]]:
    """Per partition: (offset, version) sorted by offset; asserts no input is missing or
    answered twice."""
    seen = [(r["source"]["partition"], r["source"]["offset"]) for r in results]
    assert len(seen) == len(set(seen)) == IMAGES, "an input was answered twice or not at all"
    by_partition: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for r in results:
        by_partition[r["source"]["partition"]].append((r["source"]["offset"], r["version"]))
    for partition, rows in by_partition.items():
        rows.sort()
        offsets = [o for o, _ in rows]
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), partition
    return by_partition


@pytest.mark.parametrize("client", CLIENTS)
def test_new_version_mid_stream_switches_between_batches_none_lost(
    client: str,
    kafka_settings: KafkaSettings,
    agent_thread: Any,
    topic_reader: Any,
    setup: dict[str, Any],
) -> None:
    inp, out, dl = setup["topics"]
    agent = _start(agent_thread, setup, client)
    reader = topic_reader(out, dl)
    replay = _replay_in_background(kafka_settings, inp)

    reader.until(lambda r: r.count(out) >= 100, 60, "the first 100 results")
    bundle = write_tiny_bundle(setup["tmp"] / "b2", "2", private_key=setup["private"])
    setup["registry"].publish(bundle)

    reader.until(lambda r: r.count(out) >= IMAGES, 120, f"{IMAGES} results")
    replay.join(60)
    assert agent.stop() == 0
    reader.poll()
    assert reader.count(dl) == 0

    by_partition = _one_result_per_input(_results(reader, out))
    versions = [v for rows in by_partition.values() for _, v in rows]
    assert versions.count("1") > 0 and versions.count("2") > 0, "no switch mid-stream"
    for partition, rows in by_partition.items():
        sequence = [v for _, v in rows]
        # atomic: within a partition every v1 answer precedes every v2 answer
        assert sequence == sorted(sequence, key=int), f"versions interleave on {partition}"
    assert agent.sample("edge_agent_model_swaps_total", {"result": "ok"}) == 1
    assert agent.sample("edge_agent_model_swaps_total", {"result": "refused"}) == 0
    info = {"model": NAME, "version": "2"}
    assert (
        agent.sample("edge_agent_model_info", {**info, "sha256": _sha(bundle), "variant": "int8"})
        == 1
    )


def test_tampered_version_mid_stream_is_refused_and_the_old_model_answers_everything(
    kafka_settings: KafkaSettings, agent_thread: Any, topic_reader: Any, setup: dict[str, Any]
) -> None:
    inp, out, dl = setup["topics"]
    agent = _start(agent_thread, setup)
    reader = topic_reader(out, dl)
    replay = _replay_in_background(kafka_settings, inp)

    reader.until(lambda r: r.count(out) >= 100, 60, "the first 100 results")
    published = setup["registry"].publish(
        write_tiny_bundle(setup["tmp"] / "b2", "2", private_key=setup["private"])
    )
    model = bytearray((published / MODEL_FILE).read_bytes())
    model[-20] ^= 0x01  # altered after signing
    (published / MODEL_FILE).write_bytes(bytes(model))

    reader.until(lambda r: r.count(out) >= IMAGES, 120, f"{IMAGES} results")
    replay.join(60)

    def refused() -> bool:
        return (agent.sample("edge_agent_model_swaps_total", {"result": "refused"}) or 0) >= 1

    wait_until(refused, 60, "the tampered version to be refused")
    assert agent.stop() == 0

    by_partition = _one_result_per_input(_results(reader, out))
    assert {v for rows in by_partition.values() for _, v in rows} == {"1"}
    assert agent.sample("edge_agent_model_swaps_total", {"result": "ok"}) == 0


def _sha(bundle: Path) -> str:
    from stream.bundle import read_manifest

    return read_manifest(bundle).model_sha256
