"""Shadow and promote through a real agent process on the real broker (issue 14, item 4).

Tiny sequence models (:mod:`tests.fixtures.tiny_models`, 4 channels, windows of 4): the
``softmax`` head answers ``a`` for every window (all logits equal), the ``channels`` head
answers the class whose channel is largest, which is how the windows here are labelled.
So ``channels`` is the better model wherever labels are known, and the two agree on about
a quarter of the windows.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream import codecs
from stream.bundle import read_manifest, write_bundle
from stream.kafka import ensure_topics
from stream.registry import Registry
from stream.rollout import Rollout
from tests.fixtures.agent import wait_until
from tests.fixtures.signing import TEST_SIGNING_KEY
from tests.fixtures.tiny_models import SEQUENCE_LABELS, build_tiny_bundle

pytestmark = pytest.mark.integration

WINDOW, CHANNELS = 4, 4
NAME = "shadowed"
MIN_INPUTS = 40


def _version(src: Path, dest: Path, version: str) -> Path:
    manifest = dataclasses.replace(read_manifest(src), name=NAME, version=version)
    write_bundle(dest, manifest, (src / "model.tflite").read_bytes(), private_key=TEST_SIGNING_KEY)
    return dest


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shadow-bundles")
    return {
        head: build_tiny_bundle(
            root / head, "sequence", window=WINDOW, channels=CHANNELS, head=head
        )
        for head in ("softmax", "channels", "sqrt")
    }


class Stream:
    """Labelled sensor windows to the agent's input topic, one window per message."""

    def __init__(self, producer: Any, topic: str, *, labelled: bool) -> None:
        self.producer, self.topic, self.labelled = producer, topic, labelled
        self.rng = np.random.default_rng(0)
        self.sent = 0
        #: Windows whose readings are all negative (a NaN for the ``sqrt`` model).
        self.negative = False

    def send(self, n: int) -> None:
        for _ in range(n):
            k = int(self.rng.integers(CHANNELS))
            samples = self.rng.random((WINDOW, CHANNELS)) * 0.5
            samples[:, k] += 1.0
            if self.negative:
                samples = -samples
            device = f"dev-{self.sent % 4}"
            headers = [("content-type", b"application/json")]
            if self.labelled:
                headers.append(("label", SEQUENCE_LABELS[k].encode()))
            value = codecs.encode_chunk(device, 1_000 + self.sent, samples)
            self.producer.send(self.topic, value=value, key=device.encode(), headers=headers)
            self.sent += 1
        self.producer.flush()


@pytest.fixture
def setup(
    tmp_path: Path, kafka_settings: Any, unique_topic: Any, producer_factory: Any
) -> dict[str, Any]:
    inp, out, dl = unique_topic("sensors"), unique_topic("results"), unique_topic("dl")
    ensure_topics(kafka_settings, [inp, out, dl], partitions=1)
    return {
        "registry": Registry(tmp_path / "registry"),
        "topics": (inp, out, dl),
        "producer": producer_factory(),
        "state": tmp_path / "state",
        "tmp": tmp_path,
    }


def _agent(agent_process: Any, s: dict[str, Any], *extra: str) -> Any:
    inp, out, dl = s["topics"]
    return agent_process(
        "--registry",
        str(s["registry"].root),
        "--model",
        NAME,
        "--input",
        inp,
        "--output",
        out,
        "--deadletter",
        dl,
        "--model-poll-s",
        "0.2",
        "--max-latency-ms",
        "0",
        "--state-dir",
        str(s["state"]),
        "--agent-id",
        "shadow-test-agent",
        *extra,
    )


def _results(reader: Any, topic: str) -> list[Any]:
    return [codecs.decode_result(r.value) for r in reader.records[topic]]


def _one_result_per_input(results: list[Any], sent: int) -> None:
    offsets = [r.source["offset"] for r in results]
    assert len(offsets) == len(set(offsets)) == sent, "an input was answered twice or not at all"


def _decisions(state: Path) -> list[dict[str, Any]]:
    return json.loads((state / "promotions" / f"{NAME}.json").read_text())["decisions"]


SHADOW = ("--promotion", "shadow", "--shadow-min-inputs", str(MIN_INPUTS))


def _serve_then_publish(
    agent_process: Any,
    topic_reader: Any,
    s: dict[str, Any],
    bundles: dict[str, Path],
    *,
    serving: str,
    candidate: str,
    labelled: bool,
) -> tuple[Any, Any, Stream]:
    """Version 1 (head ``serving``) answers 20 windows under ``--promotion shadow``, then
    version 2 (head ``candidate``) is published: the agent, a results reader, the stream."""
    registry, (inp, out, dl), tmp = s["registry"], s["topics"], s["tmp"]
    registry.publish(_version(bundles[serving], tmp / "v1", "1"))
    agent = _agent(agent_process, s, *SHADOW)
    reader = topic_reader(out, dl)
    stream = Stream(s["producer"], inp, labelled=labelled)
    stream.send(20)
    reader.until(lambda r: r.count(out) >= 20, 60, "20 results of version 1")
    registry.publish(_version(bundles[candidate], tmp / "v2", "2"))
    return agent, reader, stream


def _stream_until_decided(agent: Any, stream: Stream, result: str, reason: str) -> None:
    """Send windows, 10 at a time, until the agent counts the decision."""
    labels = {"model": NAME, "result": result, "reason": reason}

    def decided() -> bool:
        if (agent.metric("edge_agent_promotions_total", labels) or 0) >= 1:
            return True
        stream.send(10)
        return False

    wait_until(decided, 90, f"version 2 {result} by {reason}")


def test_a_better_candidate_is_shadowed_and_promoted_on_labelled_inputs(
    agent_process: Any, topic_reader: Any, setup: dict[str, Any], bundles: dict[str, Path]
) -> None:
    out, dl = setup["topics"][1:]
    agent, reader, stream = _serve_then_publish(
        agent_process,
        topic_reader,
        setup,
        bundles,
        serving="softmax",
        candidate="channels",
        labelled=True,
    )
    candidate = {"model": NAME, "version": "2"}
    wait_until(
        lambda: agent.metric("edge_agent_shadow_candidate_info", candidate) == 1,
        60,
        "version 2 in shadow",
    )
    _stream_until_decided(agent, stream, "promoted", "accuracy")
    mark = stream.sent
    stream.send(20)
    reader.until(lambda r: r.count(out) >= stream.sent, 60, "every result")
    assert agent.terminate() == 0
    reader.poll()

    results = _results(reader, out)
    _one_result_per_input(results, stream.sent)
    assert reader.count(dl) == 0
    by_offset = sorted((r.source["offset"], r.version) for r in results)
    versions = [v for _, v in by_offset]
    switch = versions.index("2")
    assert set(versions[:switch]) == {"1"} and set(versions[switch:]) == {"2"}
    assert switch >= 20 + MIN_INPUTS, "version 2 answered before it was shadowed"
    assert all(r.version == "2" for r in results if r.source["offset"] >= mark)
    # version 2 is right on every window, version 1 on the quarter labelled "a"
    assert all(r.label == r.true_label for r in results if r.version == "2")
    decision = _decisions(setup["state"])[-1]
    assert decision["version"] == "2" and decision["result"] == "promoted"
    assert decision["reason"] == "accuracy"
    assert decision["stats"]["candidate_accuracy"] == 1.0
    assert decision["stats"]["serving_accuracy"] < 0.5
    assert decision["stats"]["inputs"] >= MIN_INPUTS and decision["stats"]["errors"] == 0
    floor = json.loads((setup["state"] / "anti-rollback" / f"{NAME}.json").read_text())
    assert floor["highest_verified"] == "2"
    log = agent.log()
    assert 'model candidate in shadow name="shadowed" version="2"' in log
    assert 'model candidate promoted name="shadowed" version="2" reason="accuracy"' in log


@pytest.mark.slow  # two agent starts (~25 s)
def test_a_worse_candidate_is_rejected_and_serving_never_changes(
    agent_process: Any, topic_reader: Any, setup: dict[str, Any], bundles: dict[str, Path]
) -> None:
    """Unlabelled inputs: the agreement gate. The candidate answering one class agrees on
    about a quarter of the windows and is rejected; every input gets exactly one result,
    all from version 1; after a restart version 2 is not shadowed again."""
    out, dl = setup["topics"][1:]
    agent, reader, stream = _serve_then_publish(
        agent_process,
        topic_reader,
        setup,
        bundles,
        serving="channels",
        candidate="softmax",
        labelled=False,
    )
    _stream_until_decided(agent, stream, "rejected", "agreement")
    candidate = {"model": NAME, "version": "2"}
    agreement = agent.metric("edge_agent_shadow_agreement_ratio", candidate)
    assert agreement is not None and agreement < 0.9
    assert (agent.metric("edge_agent_shadow_inputs_total", candidate) or 0) >= MIN_INPUTS
    assert agent.metric("edge_agent_shadow_errors_total", candidate) == 0
    assert agent.metric("edge_agent_shadow_candidate_info", candidate) is None
    stream.send(20)
    reader.until(lambda r: r.count(out) >= stream.sent, 60, "every result")
    assert agent.terminate() == 0

    decision = _decisions(setup["state"])[-1]
    assert (decision["version"], decision["result"]) == ("2", "rejected")
    assert decision["stats"]["agreement"] < 0.9
    floor = json.loads((setup["state"] / "anti-rollback" / f"{NAME}.json").read_text())
    assert floor["highest_verified"] == "1", "a rejected candidate became the floor"

    # a restart remembers the rejection: version 1 serves, version 2 is not shadowed again
    again = _agent(agent_process, setup, *SHADOW)
    stream.send(20)
    reader.until(lambda r: r.count(out) >= stream.sent, 60, "every result after the restart")
    assert again.metric("edge_agent_shadow_candidate_info", candidate) is None
    assert again.metric("edge_agent_model_info", {"model": NAME})
    assert again.metric("edge_agent_model_info", {"model": NAME, "version": "1"}) == 1
    assert again.terminate() == 0
    assert "model candidate in shadow" not in again.log()
    reader.poll()
    results = _results(reader, out)
    _one_result_per_input(results, stream.sent)
    assert {r.version for r in results} == {"1"}
    assert reader.count(dl) == 0


def test_rollout_share_zero_keeps_the_agent_on_its_version_until_the_share_grows(
    agent_process: Any, topic_reader: Any, setup: dict[str, Any], bundles: dict[str, Path]
) -> None:
    registry, (inp, out, dl), tmp = setup["registry"], setup["topics"], setup["tmp"]
    registry.publish(_version(bundles["softmax"], tmp / "v1", "1"))
    agent = _agent(agent_process, setup)  # --promotion direct
    reader = topic_reader(out, dl)
    stream = Stream(setup["producer"], inp, labelled=True)
    registry.publish(_version(bundles["channels"], tmp / "v2", "2"), rollout=Rollout(share=0.0))
    wait_until(lambda: "outside this agent's rollout share" in agent.log(), 30, "the rollout gate")
    stream.send(20)
    reader.until(lambda r: r.count(out) >= 20, 60, "20 results")
    assert {r.version for r in _results(reader, out)} == {"1"}
    assert agent.metric("edge_agent_model_swaps_total", {"result": "ok"}) == 0

    registry.set_rollout(NAME, "2", Rollout(share=1.0))
    wait_until(
        lambda: agent.metric("edge_agent_model_info", {"model": NAME, "version": "2"}) == 1,
        30,
        "version 2 once the share covers the agent",
    )
    stream.send(20)
    reader.until(lambda r: r.count(out) >= 40, 60, "40 results")
    assert agent.terminate() == 0
    versions = [r.version for r in sorted(_results(reader, out), key=lambda r: r.source["offset"])]
    assert versions == ["1"] * 20 + ["2"] * 20


def test_a_promoted_version_that_then_fails_the_health_gate_is_rolled_back(
    agent_process: Any, topic_reader: Any, setup: dict[str, Any], bundles: dict[str, Path]
) -> None:
    """The ``sqrt`` candidate agrees with the ``softmax`` model on positive windows (both
    answer ``a``) and is promoted; windows with a negative sum then make it answer NaN, the
    output gate trips and the agent rolls back to version 1, which stays (floor 1, version
    2 remembered as rolled back from)."""
    out, dl = setup["topics"][1:]
    agent, reader, stream = _serve_then_publish(
        agent_process,
        topic_reader,
        setup,
        bundles,
        serving="softmax",
        candidate="sqrt",
        labelled=False,
    )
    _stream_until_decided(agent, stream, "promoted", "agreement")
    wait_until(
        lambda: agent.metric("edge_agent_model_info", {"model": NAME, "version": "2"}) == 1,
        30,
        "version 2 serving",
    )
    stream.negative = True
    rollback = {"reason": "bad_model_output"}

    def rolled_back() -> bool:
        if (agent.metric("edge_agent_model_rollbacks_total", rollback) or 0) >= 1:
            return True
        stream.send(10)
        return False

    wait_until(rolled_back, 60, "the rollback of version 2")
    mark = stream.sent
    stream.send(10)
    reader.until(
        lambda r: (
            any(codecs.decode_result(x.value).source["offset"] >= mark for x in r.records[out])
            and r.count(out) + r.count(dl) >= stream.sent
        ),
        60,
        "an answer for every window",
    )
    assert agent.terminate() == 0
    after = [r for r in _results(reader, out) if r.source["offset"] >= mark]
    assert after and {r.version for r in after} == {"1"}
    floor = json.loads((setup["state"] / "anti-rollback" / f"{NAME}.json").read_text())
    assert floor["highest_verified"] == "1" and floor["rolled_back_from"] == ["2"]
    assert _decisions(setup["state"])[-1]["result"] == "promoted"
