"""``edgeinfer monitor`` end to end on the real broker: an agent answers a replay that plays
the labeller (``--feedback``), the monitor runs as a process, a real Prometheus scrapes it,
and PromQL's online accuracy equals the accuracy of the results against their true labels.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.prometheus import ALERT_RULES, PrometheusServer, ScrapeJob
from fleet.scrape import http_get, metric_value
from stream import codecs
from stream.broker import free_port
from stream.kafka import ensure_topics, make_producer
from stream.replay import replay_images, replay_sensors
from stream.schemas import InferenceResult
from stream.settings import KafkaSettings
from tests.fixtures.agent import wait_until

pytestmark = pytest.mark.integration

JOB = "edgeinfer-monitor"
#: Written to both topics before the stream: each is counted as invalid and skipped.
HOSTILE = (b"\xff\xfe", b'{"source": 1, "label": "7"}', b"[]")


class MonitorProcess:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        status, body = http_get(self.url + "/metrics")
        assert status == 200, body
        return metric_value(body, name, labels)


@pytest.fixture
def monitor_process(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> Iterator[Callable[..., MonitorProcess]]:
    started: list[MonitorProcess] = []

    def start(*args: str) -> MonitorProcess:
        port = free_port()
        log = tmp_path / f"monitor-{len(started)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream", "monitor", "--metrics-port", str(port),
             "--metrics-host", "127.0.0.1", "--bootstrap-servers",
             kafka_settings.bootstrap_servers, *args],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        mon = MonitorProcess(proc, port, log)
        started.append(mon)

        def ready() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"the monitor exited ({proc.returncode}):\n{log.read_text()}")
            return http_get(mon.url + "/readyz", timeout=1)[0] == 200

        wait_until(ready, 60, "the monitor to own its partitions")
        return mon

    yield start
    for mon in started:
        mon.proc.terminate()
        try:
            assert mon.proc.wait(timeout=20) == 0, mon.log.read_text()
        except subprocess.TimeoutExpired:
            mon.proc.kill()
            mon.proc.wait()
            pytest.fail("the monitor did not stop on SIGTERM")


def accuracy(results: list[InferenceResult]) -> float:
    assert all(r.true_label is not None for r in results)
    return sum(r.label == r.true_label for r in results) / len(results)


def test_online_accuracy_in_prometheus_equals_the_accuracy_of_the_results(
    kafka_settings: KafkaSettings,
    streaming_agent: Any,
    unique_topic: Any,
    monitor_process: Any,
    digits_bundles: dict[str, Path],
    tmp_path: Path,
) -> None:
    stream = streaming_agent(digits_bundles["int8"], partitions=2)
    out = stream.topics.output
    feedback = unique_topic("feedback")
    ensure_topics(kafka_settings, [feedback], partitions=2)
    monitor = monitor_process(
        "--results-topic", out, "--feedback-topic", feedback, "--group", unique_topic("mon"),
        "--from-beginning", "--window", "1000",
    )  # fmt: skip
    prom = PrometheusServer(
        tmp_path / "prometheus",
        jobs=[ScrapeJob(JOB, (f"127.0.0.1:{monitor.port}",))],
        rules_text=ALERT_RULES.read_text(),
    )
    prom.start()
    try:
        assert "EdgeOnlineAccuracyLow" in prom.alert_names()
        # Hostile messages on both topics first: counted, skipped, the monitor goes on.
        producer = make_producer(kafka_settings)
        for value in HOSTILE:
            producer.send(out, value=value, key=b"evil")
            producer.send(feedback, value=value, key=b"evil")
        producer.flush()
        producer.close()

        stats = replay_images(
            kafka_settings, "digits", topic=stream.topics.input, rate=0, partitions=None,
            feedback=feedback,
        )  # fmt: skip
        assert (stats.sent, stats.feedback) == (450, 450)
        stream.until(results=450 + len(HOSTILE), timeout_s=120)
        records = stream.reader.records[out]
        results = [codecs.decode_result(r.value) for r in records if r.key != b"evil"]
        assert len(results) == 450
        expected = accuracy(results)
        assert 0.5 < expected < 1.0, "the test needs some wrong answers to be telling"
        (version,) = {r.version for r in results}
        labels = f'{{job="{JOB}", model="{results[0].model}", version="{version}"}}'

        wait_until(
            lambda: prom.scalar(f"edgeinfer_online_window_results{labels}") == 450,
            60,
            "Prometheus to see 450 joined results",
        )
        online = prom.scalar(f"edgeinfer_online_accuracy{labels}")
        assert online == pytest.approx(expected, abs=1e-9)
        assert prom.scalar(
            f'edgeinfer_online_joined_total{{job="{JOB}", outcome="incorrect"}}'
        ) == sum(r.label != r.true_label for r in results)
        messages = "edgeinfer_monitor_messages_total"
        for kind in ("results", "feedback"):
            assert prom.scalar(f'{messages}{{kind="{kind}", outcome="matched"}}') == 450
            invalid = prom.scalar(f'{messages}{{kind="{kind}", outcome="invalid"}}')
            assert invalid == len(HOSTILE)
        assert prom.scalar('sum(edgeinfer_monitor_pending{job="edgeinfer-monitor"})') == 0
        assert prom.firing("EdgeOnlineAccuracyLow") == []
    finally:
        prom.stop()


@pytest.mark.slow
def test_sensor_windows_join_the_feedback_of_their_last_reading(
    kafka_settings: KafkaSettings,
    streaming_agent: Any,
    unique_topic: Any,
    monitor_process: Any,
    motions_bundles: dict[str, Path],
) -> None:
    stream = streaming_agent(motions_bundles["int8"], kind="sensors", partitions=2)
    feedback = unique_topic("feedback")
    ensure_topics(kafka_settings, [feedback], partitions=2)
    monitor = monitor_process(
        "--results-topic", stream.topics.output, "--feedback-topic", feedback,
        "--group", unique_topic("mon"), "--from-beginning", "--window", "1000",
    )  # fmt: skip
    stats = replay_sensors(
        kafka_settings, "basic-motions", topic=stream.topics.input, rate=0, partitions=None,
        feedback=feedback,
    )  # fmt: skip
    assert stats.feedback == stats.sent == 4000
    # One window per recording at least (100 readings each); wait until the agent is idle.
    stream.until(results=40, timeout_s=120)
    stream.drain()
    results = stream.results()
    assert all(r.source["offset"] == r.source["last_offset"] for r in results)
    labels = {"model": results[0].model, "version": results[0].version}
    wait_until(
        lambda: monitor.metric("edgeinfer_online_window_results", labels) == len(results),
        60,
        f"the monitor to join {len(results)} windows",
    )
    assert monitor.metric("edgeinfer_online_accuracy", labels) == pytest.approx(
        accuracy(results), abs=1e-9
    )
    # Every other reading's feedback matches no result: waiting, not joined.
    pending = monitor.metric("edgeinfer_monitor_pending", {"kind": "feedback"})
    assert pending == stats.feedback - len(results)
