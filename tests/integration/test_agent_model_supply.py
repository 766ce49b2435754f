"""Secure model supply, attacked on the real broker: only signed, current models run.

Each test is one attack from issue 11 and fails on the code before it: an unsigned bundle
without ``--allow-unsigned``, announcements whose URI names ``/dev/zero`` or a FIFO, a
downgrade by re-announcing the newest version with garbage, a downgrade through the
registry (newer folders removed, an unsigned pin file), an odd registry folder, idle
connections to the health port, and a pipeline loop that stopped advancing. The models are
the tiny real LiteRT models of test_agent_models.py, signed with the suite's key.

Why one module of this size: one test per attack of issue 11, sharing the signed tiny
bundles, the models topic and the store factory defined at the top.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from edge_agent.exceptions import ModelRefusedError, NoModelError
from edge_agent.metrics import AgentMetrics
from edge_agent.model_store import ModelStore
from edge_agent.sources import BundleDirSource, ModelSource, ModelsTopicSource, RegistrySource
from fleet.top import make_row, render, scrape
from stream import codecs
from stream.announcements import announce, announcement_value
from stream.bundle import MODEL_FILE
from stream.kafka import ensure_topics, make_producer
from stream.registry import Registry
from stream.settings import KafkaSettings
from tests.fixtures.agent import http_get, wait_until
from tests.fixtures.signing import TEST_SIGNING_KEY, write_public_key
from tests.integration.test_agent_models import (
    NAME,
    build_tiny_models,
    poll_until,
    write_tiny_bundle,
)
from tests.integration.test_agent_slow_inference import SlowStore

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny() -> None:
    pytest.importorskip("keras")
    build_tiny_models()


@pytest.fixture
def make(tiny: None, tmp_path: Path) -> Callable[..., Path]:
    """``make(version, signed=True)``: a tiny bundle signed with the suite's key."""

    def build(version: str, *, signed: bool = True, where: Path | None = None) -> Path:
        folder = where or tmp_path / "bundles" / version
        key = TEST_SIGNING_KEY if signed else None
        return write_tiny_bundle(folder, version, private_key=key)

    return build


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


@pytest.fixture
def models_topic(kafka_settings: KafkaSettings, unique_topic: Callable[[str], str]) -> str:
    topic = unique_topic("models")
    ensure_topics(kafka_settings, [topic], partitions=1)
    return topic


@pytest.fixture
def announced(
    make: Callable[..., Path], kafka_settings: KafkaSettings, models_topic: str
) -> Callable[..., Path]:
    """``announced(version)``: a signed tiny bundle, announced on ``models_topic``."""

    def publish(version: str) -> Path:
        bundle = make(version)
        announce(kafka_settings, bundle, topic=models_topic)
        return bundle

    return publish


@pytest.fixture
def store_factory(tmp_path: Path) -> Iterator[Callable[..., ModelStore]]:
    """``store_factory(source, **options)``: a store trusting the suite's key, with its own
    metrics, all stores of a test sharing one state dir (the anti-rollback floor)."""
    made: list[ModelStore] = []

    def build(source: ModelSource, **options: Any) -> ModelStore:
        values: dict[str, Any] = {
            "model_name": NAME,
            "public_key": TEST_SIGNING_KEY.public_key(),
            "num_threads": 1,
            "pinned_version": None,
            "metrics": AgentMetrics(registry=CollectorRegistry()),
            "state_dir": tmp_path / "state",
        }
        values.update(options)
        store = ModelStore(source=source, **values)
        made.append(store)
        return store

    yield build
    for store in made:
        store.close()


def sample(store: ModelStore, name: str, labels: dict[str, str] | None = None) -> float:
    assert store.metrics is not None
    return float(store.metrics.registry.get_sample_value(name, labels or {}) or 0.0)


# ------------------------------------------------------------------ signatures


def _agent_cli(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream", "agent", *args, "--metrics-port", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={k: v for k, v in os.environ.items() if not k.startswith("EDGE_")},
    )


def test_unsigned_bundles_run_only_with_allow_unsigned_which_is_shown(
    make: Callable[..., Path],
    agent_process: Any,
    unique_topic: Callable[[str], str],
    tmp_path: Path,
) -> None:
    unsigned = make("1", signed=False)
    base = ["--bundle", str(unsigned), "--state-dir", str(tmp_path / "cli-state")]
    base += ["--bootstrap-servers", "127.0.0.1:9"]  # never reached: it stops before
    no_key = _agent_cli(*base)
    assert no_key.returncode == 2
    assert "error: no public key: the agent runs only bundles signed by a trusted key" in (
        no_key.stderr
    )
    assert "--allow-unsigned (EDGE_ALLOW_UNSIGNED=1)" in no_key.stderr
    refused = _agent_cli(*base, "--public-key", str(write_public_key(tmp_path / "test.pub")))
    assert refused.returncode == 2
    assert "is unsigned and a public key is configured: refused" in refused.stderr

    inp = unique_topic("images")
    args = ["--input", inp, "--group", unique_topic("group")]
    agent = agent_process("--bundle", str(unsigned), "--allow-unsigned", *args)
    assert agent.metric("edge_agent_model_unsigned_allowed") == 1
    assert "unsigned bundles are allowed (--allow-unsigned)" in agent.log()
    row = make_row(scrape(agent.url), None)
    assert row.unsigned_allowed
    assert "UNSIGNED" in render([row])
    assert agent.terminate() == 0

    signed = agent_process("--bundle", str(make("2")), *args)
    assert signed.metric("edge_agent_model_unsigned_allowed") == 0
    assert "UNSIGNED" not in render([make_row(scrape(signed.url), None)])


# ------------------------------------------------------------- the models topic


def _announce_raw(settings: KafkaSettings, topic: str, value: bytes) -> None:
    producer = make_producer(settings)
    try:
        producer.send(topic, key=NAME.encode(), value=value).get(timeout=30)
    finally:
        producer.close(timeout=30)


def _by_uri(bundle: Path, uri: str) -> bytes:
    from stream.bundle import verify_bundle

    data = json.loads(announcement_value(verify_bundle(bundle), inline_limit=10))
    data["uri"] = uri
    return json.dumps(data).encode()


def test_announced_uris_naming_dev_zero_or_a_fifo_are_refused_without_reading(
    make: Callable[..., Path],
    announced: Callable[..., Path],
    kafka_settings: KafkaSettings,
    models_topic: str,
    store_factory: Callable[..., ModelStore],
    tmp_path: Path,
) -> None:
    topic = models_topic
    announced("1")
    source = ModelsTopicSource(kafka_settings, topic, NAME, tmp_path / "state" / "models-cache")
    store = store_factory(source)
    assert store.load_initial(timeout_s=60).version == "1"

    fifo = tmp_path / "model.fifo"
    os.mkfifo(fifo)
    # genuine signed manifests (the signature does not cover the URI) pointing elsewhere
    _announce_raw(kafka_settings, topic, _by_uri(make("2"), "file:///dev/zero"))
    _announce_raw(kafka_settings, topic, _by_uri(make("3"), fifo.as_uri()))
    started = time.monotonic()
    wait_until(lambda: store.poll(block=True) is None and len(store.refused) == 2, 60, "refusals")
    assert time.monotonic() - started < 30  # the model worker never hung on the FIFO
    for version in ("2", "3"):
        assert "is not a regular file (a device, FIFO, socket or folder)" in store.refused[version]
    assert store.current().version == "1"
    announced("4")  # the worker still works
    assert poll_until(store, "4").version == "4"


def test_re_announcing_the_newest_version_with_garbage_cannot_force_a_downgrade(
    announced: Callable[..., Path],
    kafka_settings: KafkaSettings,
    models_topic: str,
    store_factory: Callable[..., ModelStore],
    tmp_path: Path,
) -> None:
    topic, cache = models_topic, tmp_path / "state" / "models-cache"
    for version in ("1", "2"):
        announced(version)
    store = store_factory(ModelsTopicSource(kafka_settings, topic, NAME, cache))
    assert store.load_initial(timeout_s=60).version == "2"
    good = (cache / "2" / MODEL_FILE).read_bytes()
    store.close()

    # version 2 again: garbage with a consistent hash, unsigned and then "signed" by nobody
    garbage = tmp_path / "garbage"
    write_tiny_bundle(garbage, "2", model=b"TFL3 garbage" * 50, variant="float32")
    _announce_raw(kafka_settings, topic, announcement_value(read_bundle(garbage)))
    forged = json.loads(announcement_value(read_bundle(garbage)))
    forged["manifest"]["signature"] = {"algorithm": "ed25519", "key_id": "x", "value": "AAAA"}
    _announce_raw(kafka_settings, topic, json.dumps(forged).encode())

    for allow_unsigned in (False, True):  # with --allow-unsigned the cached copy still wins
        restarted = store_factory(
            ModelsTopicSource(kafka_settings, topic, NAME, cache, retry_s=0.2),
            allow_unsigned=allow_unsigned,
        )
        assert restarted.load_initial(timeout_s=60).version == "2"
        assert (cache / "2" / MODEL_FILE).read_bytes() == good
        restarted.close()

    # with --allow-unsigned the garbage is the latest accepted announcement of 2: once the
    # verified copy is lost as well, only version 1 is usable, and 1 is below the floor
    shutil.rmtree(cache / "2")
    lost = store_factory(
        ModelsTopicSource(kafka_settings, topic, NAME, cache, retry_s=0.2), allow_unsigned=True
    )
    with pytest.raises(NoModelError, match="versions below 2 are not run: it is the highest"):
        lost.load_initial(timeout_s=5)
    assert "2" in lost.refused  # the garbage was tried, and refused
    assert sample(lost, "edge_agent_model_downgrades_blocked_total", {"reason": "older_version"})
    lost.close()
    operator = store_factory(
        ModelsTopicSource(kafka_settings, topic, NAME, cache, retry_s=0.2), pinned_version="1"
    )
    assert operator.load_initial(timeout_s=60).version == "1"  # --pin: an operator's choice
    assert sample(operator, "edge_agent_model_downgrades_total", {"by": "pin"}) == 1


def read_bundle(folder: Path) -> Any:
    from stream.bundle import verify_bundle

    return verify_bundle(folder)


# ------------------------------------------------------------------ the registry


def test_the_registry_cannot_downgrade_an_agent_unless_an_operator_says_so(
    make: Callable[..., Path], registry: Registry, store_factory: Callable[..., ModelStore]
) -> None:
    for version in ("1", "2", "3"):
        registry.publish(make(version))
    folder = registry.root / NAME
    shutil.copytree(folder / "1", folder / "copy of 1")  # an odd folder: skipped, not fatal
    store = store_factory(RegistrySource(registry.root, NAME))
    assert store.load_initial(timeout_s=60).version == "3"
    registry.publish(make("4"))
    assert poll_until(store, "4").version == "4"  # swaps still work next to the odd folder

    # an attacker with write access removes the newer versions and pins the oldest
    shutil.rmtree(folder / "4")
    shutil.rmtree(folder / "3")
    (folder / "pinned").write_text("1\n")
    for _ in range(3):
        assert store.poll(block=True) is None
        time.sleep(1.1)  # the registry is listed again once its mtime is a second old
    assert store.current().version == "4"
    assert sample(store, "edge_agent_model_downgrades_blocked_total", {"reason": "registry_pin"})
    assert sample(store, "edge_agent_model_downgrades_blocked_total", {"reason": "older_version"})
    store.close()

    restarted = store_factory(RegistrySource(registry.root, NAME))
    with pytest.raises(NoModelError, match="versions below 4 are not run"):
        restarted.load_initial(timeout_s=2)
    trusted = store_factory(RegistrySource(registry.root, NAME), trust_registry_pin=True)
    assert trusted.load_initial(timeout_s=60).version == "1"  # the operator trusts the pin
    assert sample(trusted, "edge_agent_model_downgrades_total", {"by": "registry_pin"}) == 1
    floor = store_factory(
        RegistrySource(registry.root, NAME), min_version="2", trust_registry_pin=True
    )
    with pytest.raises(NoModelError):  # never below --min-version, whoever pins
        floor.load_initial(timeout_s=2)


def test_the_agents_own_rollback_is_not_blocked_and_holds_after_a_restart(
    make: Callable[..., Path], registry: Registry, store_factory: Callable[..., ModelStore]
) -> None:
    registry.publish(make("1"))
    store = store_factory(RegistrySource(registry.root, NAME))
    v1 = store.load_initial(timeout_s=60)
    registry.publish(make("2"))
    poll_until(store, "2")
    assert store.rollback() is v1  # the pipeline's automatic rollback (bad outputs)
    assert sample(store, "edge_agent_model_downgrades_total", {"by": "rollback"}) == 1
    store.close()
    restarted = store_factory(RegistrySource(registry.root, NAME))
    assert restarted.load_initial(timeout_s=60).version == "1"  # not 2 again by itself
    registry.publish(make("3"))
    assert poll_until(restarted, "3").version == "3"


def test_a_bundle_folder_below_the_floor_fails_fast_and_names_pin(
    make: Callable[..., Path], store_factory: Callable[..., ModelStore], tmp_path: Path
) -> None:
    assert store_factory(BundleDirSource(make("2"))).load_initial(timeout_s=60).version == "2"
    old = BundleDirSource(make("1"))
    started = time.monotonic()
    with pytest.raises(ModelRefusedError, match="an operator runs an older one with --pin"):
        store_factory(old).load_initial(timeout_s=60)
    assert time.monotonic() - started < 10
    assert store_factory(old, pinned_version="1").load_initial(timeout_s=60).version == "1"


# ------------------------------------------------------------------ health


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def test_idle_connections_cannot_pile_up_threads_in_the_agent(
    make: Callable[..., Path], agent_process: Any, unique_topic: Callable[[str], str]
) -> None:
    agent = agent_process("--bundle", str(make("1")), "--input", unique_topic("images"))
    before = _threads(agent.proc.pid)
    idle = [socket.create_connection(("127.0.0.1", agent.port), timeout=15) for _ in range(60)]
    try:
        most = _threads(agent.proc.pid)
        answers = []
        for conn in idle:  # each is closed by the agent: turned away, or after the timeout
            answers.append(conn.recv(100))
            most = max(most, _threads(agent.proc.pid))
        assert most <= before + 16 + 2, (before, most)
        assert any(a.startswith(b"HTTP/1.0 503") for a in answers)
    finally:
        for conn in idle:
            conn.close()
    assert http_get(agent.url + "/healthz")[0] == 200
    assert agent.terminate() == 0


def test_healthz_fails_while_the_pipeline_loop_is_stuck(
    kafka_settings: KafkaSettings,
    agent_topics: Callable[..., Any],
    agent_thread: Any,
    make: Callable[..., Path],
    store_factory: Callable[..., ModelStore],
) -> None:
    topics = agent_topics()
    bundle = make("1")
    # every invoke takes 2 s: one step longer than the limit
    store = SlowStore(store_factory(BundleDirSource(bundle), metrics=None))
    agent = agent_thread(
        store=store, bundle=bundle, **topics.config(), max_batch=1, stall_timeout_s=0.5
    )
    url = f"http://127.0.0.1:{agent.agent.metrics_port}/healthz"
    assert http_get(url)[0] == 200
    producer = make_producer(kafka_settings)
    png = codecs.encode_png(np.zeros((8, 8), np.uint8))
    producer.send(topics.input, value=png, key=b"cam", headers=[("content-type", b"image/png")])
    producer.flush()
    producer.close()
    seen: list[tuple[int, str]] = []

    def stuck() -> bool:
        seen.append(http_get(url))
        return seen[-1][0] == 503

    wait_until(stuck, 60, "/healthz 503 while the model takes 2 s")
    assert "pipeline loop stuck: no step for" in seen[-1][1]
    assert "(limit 0.5 s: --stall-timeout-s" in seen[-1][1]
    wait_until(lambda: http_get(url)[0] == 200, 30, "/healthz 200 again")
    assert agent.stop() == 0
