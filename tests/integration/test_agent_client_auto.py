"""``--client auto`` (the default): librdkafka when confluent-kafka imports, else
kafka-python; the choice is logged and exported, and the agent serves on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stream.replay import replay_images
from stream.settings import KafkaSettings

pytestmark = pytest.mark.integration

N = 40


@pytest.mark.parametrize(
    ("confluent_importable", "expected"),
    [(True, "confluent"), (False, "kafka-python")],
    ids=["confluent-installed", "confluent-missing"],
)
def test_client_auto_picks_confluent_when_it_imports_else_kafka_python(
    confluent_importable: bool,
    expected: str,
    kafka_settings: KafkaSettings,
    agent_topics: Any,
    agent_process: Any,
    topic_reader: Any,
    digits_bundles: dict[str, Path],
    tmp_path: Path,
) -> None:
    env: dict[str, str] = {}
    if confluent_importable:
        pytest.importorskip("confluent_kafka")
    else:
        # A confluent_kafka package that fails to import, first on the path: the agent
        # sees what an install without confluent-kafka (or with a broken one) shows it.
        shim = tmp_path / "shim" / "confluent_kafka"
        shim.mkdir(parents=True)
        (shim / "__init__.py").write_text("raise ImportError('confluent-kafka is not here')\n")
        env["PYTHONPATH"] = str(shim.parent)
    topics = agent_topics(partitions=1)
    agent = agent_process(*topics.args(digits_bundles["int8"], "auto"), env=env)
    labels = {"client": expected, "requested": "auto"}
    assert agent.metric("edge_agent_kafka_client_info", labels) == 1
    other = "kafka-python" if expected == "confluent" else "confluent"
    assert agent.metric("edge_agent_kafka_client_info", {"client": other}) is None
    assert f'kafka client client="{expected}" requested="auto"' in agent.log()

    replay_images(kafka_settings, "digits", topic=topics.input, rate=0, limit=N, partitions=None)
    reader = topic_reader(topics.output, topics.deadletter)
    reader.until(lambda r: r.count(topics.output) >= N, 90, f"{N} results")
    assert reader.count(topics.deadletter) == 0
    assert agent.terminate() == 0
