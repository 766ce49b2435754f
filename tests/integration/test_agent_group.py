"""Two agents in one consumer group split the partitions and answer every input once."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from stream import codecs
from stream.replay import replay_images

pytestmark = pytest.mark.integration

PARTITIONS = 4


@pytest.mark.slow
@pytest.mark.parametrize(
    "clients",
    [("kafka-python", "kafka-python"), ("confluent", "kafka-python")],
    ids=["kafka-python", "confluent+kafka-python"],
)
def test_two_agents_split_partitions_and_answer_each_input_once(
    clients: tuple[str, str],
    kafka_settings: Any,
    agent_topics: Any,
    agent_thread: Any,
    topic_reader: Any,
    digits_bundles: dict[str, Path],
) -> None:
    topics = agent_topics(partitions=PARTITIONS)
    inp, out, dl = topics
    common = {
        "bundle": digits_bundles["int8"],
        **topics.config(group=True),
    }
    a = agent_thread(**common, client=clients[0])  # one group, two client libraries
    b = agent_thread(**common, client=clients[1])
    # no rebalance during the test: wait until the group has settled on a split
    deadline = time.monotonic() + 60
    while True:
        pa, pb = a.pipeline.assigned, b.pipeline.assigned
        if pa and pb and not pa & pb and pa | pb == set(range(PARTITIONS)):
            break
        assert time.monotonic() < deadline, f"no split after 60 s: {pa} {pb}"
        time.sleep(0.1)
    assert a.sample("edge_agent_partitions_assigned") == len(pa)
    assert b.sample("edge_agent_partitions_assigned") == len(pb)

    stats = replay_images(
        kafka_settings, "digits", topic=inp, rate=0, repeat=2, devices=16, partitions=None
    )
    n = stats.sent
    reader = topic_reader(inp, out, dl)
    reader.until(lambda r: r.count(out) >= n and r.count(inp) >= n, 120, f"{n} results")
    assert a.stop() == 0 and b.stop() == 0
    reader.poll()

    results = [codecs.decode_result(r.value) for r in reader.records[out]]
    done = Counter((r.source["partition"], r.source["offset"]) for r in results)
    assert set(done) == {(r.partition, r.offset) for r in reader.records[inp]}
    assert max(done.values()) == 1, "an input was answered twice"
    by_agent: dict[str, set[int]] = {}
    for r in results:
        by_agent.setdefault(r.agent_id, set()).add(r.source["partition"])
    # each agent answered only its own partitions (a partition may have got no input)
    assert set(by_agent) == {"thread-agent-0", "thread-agent-1"}
    assert by_agent["thread-agent-0"] <= pa and by_agent["thread-agent-1"] <= pb
    consumed_a = a.sample("edge_agent_messages_consumed_total", {"topic": inp}) or 0
    consumed_b = b.sample("edge_agent_messages_consumed_total", {"topic": inp}) or 0
    assert consumed_a > 0 and consumed_b > 0 and consumed_a + consumed_b == n


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_rebalance_with_work_in_flight_commits_cleanly(
    client: str,
    kafka_settings: Any,
    agent_topics: Any,
    agent_thread: Any,
    topic_reader: Any,
    digits_bundles: dict[str, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A second agent joins while the first holds inputs in its batch (issue 12): the
    rebalance callbacks do no blocking work (kafka-python runs them on its network thread,
    where a commit fails), every input is answered, at most one poll's worth twice."""
    import threading

    topics = agent_topics(partitions=PARTITIONS)
    inp, out, dl = topics
    common = {
        "bundle": digits_bundles["int8"],
        **topics.config(group=True),
        "client": client,
        # inputs wait in the batch for up to 2 s while records keep coming
        "max_batch": 10_000,
        "max_latency_ms": 2000,
    }
    a = agent_thread(**common)
    sent: dict[str, int] = {}

    def replay() -> None:
        stats = replay_images(
            kafka_settings, "digits", topic=inp, rate=150, repeat=2, devices=16, partitions=None
        )
        sent["n"] = stats.sent

    producer = threading.Thread(target=replay, daemon=True)
    producer.start()
    deadline = time.monotonic() + 60
    while len(a.pipeline.batcher) < 20:  # work in flight
        assert time.monotonic() < deadline, "the first agent never held inputs in its batch"
        time.sleep(0.01)
    b = agent_thread(**common, wait=False)
    producer.join(120)
    n = sent["n"]
    reader = topic_reader(inp, out, dl)
    reader.until(lambda r: r.count(inp) >= n, 60, f"{n} inputs")
    reader.until(
        lambda r: len(set(_sources(r.records[out]))) >= n,
        120,
        f"{n} inputs answered",
    )
    assert a.stop() == 0 and b.stop() == 0
    reader.poll()
    assert a.pipeline.revocations >= 1, "the second agent's join took partitions away"
    failed = [r.getMessage() for r in caplog.records if "failed on_partitions" in r.getMessage()]
    assert not failed, failed
    done = Counter(_sources(reader.records[out]))
    assert set(done) == {(r.partition, r.offset) for r in reader.records[inp]}
    twice = sum(c - 1 for c in done.values())
    assert twice <= 256, f"{twice} inputs answered twice (more than one poll's worth)"


def _sources(records: list[Any]) -> list[tuple[int, int]]:
    out = []
    for rec in records:
        r = codecs.decode_result(rec.value)
        out.append((r.source["partition"], r.source["offset"]))
    return out
