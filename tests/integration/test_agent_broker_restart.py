"""The broker goes away and comes back: the agent reports not-ready, waits without
spinning, recreates its idempotent producer and answers new input."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stream import codecs
from stream.broker import EmbeddedBroker, free_port
from stream.kafka import ensure_topics
from stream.replay import replay_images
from stream.settings import KafkaSettings
from tests.fixtures.agent import CLIENTS, TopicReader, http_get, wait_until

pytestmark = pytest.mark.integration

TOPICS = ("images-in", "results-out", "dead-letters")


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test only, on a fixed port so that it can come back there."""
    broker = EmbeddedBroker(port=free_port(), startup_timeout_s=60.0)
    broker.start()
    yield broker
    broker.stop()


def results_for(settings: KafkaSettings, expected: int, timeout_s: float) -> list[Any]:
    reader = TopicReader(settings, TOPICS[1])
    try:
        reader.until(lambda r: r.count(TOPICS[1]) >= expected, timeout_s, f"{expected} results")
        return [codecs.decode_result(r.value) for r in reader.records[TOPICS[1]]]
    finally:
        reader.close()


@pytest.mark.slow
@pytest.mark.parametrize("client", CLIENTS)
def test_agent_survives_a_broker_restart(
    client: str, own_broker: EmbeddedBroker, agent_thread: Any, digits_bundles: dict[str, Path]
) -> None:
    settings = KafkaSettings(bootstrap_servers=own_broker.bootstrap, session_timeout_ms=6000)
    inp, out, dl = TOPICS
    ensure_topics(settings, TOPICS, partitions=1)
    agent = agent_thread(
        kafka=settings,
        bundle=digits_bundles["int8"],
        input_topic=inp,
        output_topic=out,
        deadletter_topic=dl,
        client=client,
    )
    port = agent.agent.metrics_port
    readyz = f"http://127.0.0.1:{port}/readyz"
    replay_images(settings, "digits", topic=inp, rate=0, limit=50, partitions=None)
    assert len(results_for(settings, 50, 60)) == 50

    own_broker.stop()  # memory-only broker: topics, offsets and producer ids are gone
    wait_until(lambda: http_get(readyz)[0] == 503, 30, "/readyz 503 while the broker is away")
    assert agent.sample("edge_agent_ready") == 0
    started = time.process_time()  # the agent must wait, not spin
    time.sleep(5)
    assert time.process_time() - started < 2.5, "the agent spins while the broker is away"
    assert agent.thread.is_alive()

    own_broker.start()
    ensure_topics(settings, TOPICS, partitions=1)
    replay_images(settings, "digits", topic=inp, rate=0, limit=50, partitions=None)
    after = results_for(settings, 50, 120)
    assert {r.source["offset"] for r in after} == set(range(50))
    wait_until(lambda: http_get(readyz)[0] == 200, 60, "/readyz 200 after the broker returns")
    assert agent.sample("edge_agent_ready") == 1
    assert agent.stop() == 0
