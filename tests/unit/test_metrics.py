"""AgentMetrics names/labels (docs/architecture.md) and the HTTP endpoints."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from edge_agent.exceptions import AgentConfigError
from edge_agent.health import HealthServer
from edge_agent.metrics import AgentMetrics
from fleet.scrape import http_get as get
from stream.exceptions import DecodeError


def manifest(version: str, sha: str = "ab" * 32) -> SimpleNamespace:
    return SimpleNamespace(name="digits", version=version, model_sha256=sha, variant="int8")


def test_two_agents_in_one_process_do_not_collide() -> None:
    AgentMetrics(registry=CollectorRegistry())
    AgentMetrics(registry=CollectorRegistry())


def test_names_and_labels_match_the_architecture_table() -> None:
    reg = CollectorRegistry()
    m = AgentMetrics(registry=reg)
    m.messages_consumed.labels(topic="images").inc(3)
    m.results_produced.labels(topic="inference.results", model="digits", version="1").inc(2)
    m.deadletters.labels(reason="not_json").inc()
    m.inference_duration.labels(model="digits", version="1").observe(0.002)
    m.e2e_latency.labels(model="digits").observe(0.05)
    m.batch_size.labels(model="digits").observe(32)
    m.consumer_lag.labels(topic="images", partition="0").set(7)
    m.model_swaps.labels(result="ok").inc()
    m.windows_open.set(4)
    m.runtime_fallback.labels(reason="xnnpack_invoke_failed").inc()
    m.ready.set(1)
    m.set_model(manifest("1"))
    v = reg.get_sample_value
    assert v("edge_agent_messages_consumed_total", {"topic": "images"}) == 3
    assert (
        v(
            "edge_agent_results_produced_total",
            {"topic": "inference.results", "model": "digits", "version": "1"},
        )
        == 2
    )
    assert v("edge_agent_deadletters_total", {"reason": "not_json"}) == 1
    assert (
        v("edge_agent_inference_duration_seconds_count", {"model": "digits", "version": "1"}) == 1
    )
    assert v("edge_agent_e2e_latency_seconds_sum", {"model": "digits"}) == pytest.approx(0.05)
    assert v("edge_agent_batch_size_bucket", {"model": "digits", "le": "32.0"}) == 1
    assert v("edge_agent_consumer_lag", {"topic": "images", "partition": "0"}) == 7
    assert v("edge_agent_model_swaps_total", {"result": "ok"}) == 1
    assert v("edge_agent_windows_open") == 4
    assert v("edge_agent_runtime_fallback_total", {"reason": "xnnpack_invoke_failed"}) == 1
    assert v("edge_agent_ready") == 1
    info = {"model": "digits", "version": "1", "sha256": "ab" * 32, "variant": "int8"}
    assert v("edge_agent_model_info", info) == 1


def test_every_deadletter_reason_and_swap_result_starts_at_zero() -> None:
    reg = CollectorRegistry()
    AgentMetrics(registry=reg)
    for reason in DecodeError.REASONS:
        assert reg.get_sample_value("edge_agent_deadletters_total", {"reason": reason}) == 0
    for result in ("ok", "refused", "rollback"):
        assert reg.get_sample_value("edge_agent_model_swaps_total", {"result": result}) == 0
    assert reg.get_sample_value("edge_agent_ready") == 0


def test_set_model_keeps_only_the_current_version() -> None:
    reg = CollectorRegistry()
    m = AgentMetrics(registry=reg)
    m.set_model(manifest("1", sha="aa"))
    m.set_model(manifest("2", sha="bb"))
    old = {"model": "digits", "version": "1", "sha256": "aa", "variant": "int8"}
    new = {"model": "digits", "version": "2", "sha256": "bb", "variant": "int8"}
    assert reg.get_sample_value("edge_agent_model_info", old) is None
    assert reg.get_sample_value("edge_agent_model_info", new) == 1


def test_forget_partitions_drops_lag_series() -> None:
    reg = CollectorRegistry()
    m = AgentMetrics(registry=reg)
    m.consumer_lag.labels(topic="t", partition="0").set(1)
    m.consumer_lag.labels(topic="t", partition="1").set(2)
    m.forget_partitions("t", [0, 5])
    assert reg.get_sample_value("edge_agent_consumer_lag", {"topic": "t", "partition": "0"}) is None
    assert reg.get_sample_value("edge_agent_consumer_lag", {"topic": "t", "partition": "1"}) == 2


def test_http_endpoints() -> None:
    reg = CollectorRegistry()
    m = AgentMetrics(registry=reg)
    m.deadletters.labels(reason="corrupt_image").inc(2)
    state = {"ready": False}
    server = HealthServer(registry=reg, ready=lambda: state["ready"], host="127.0.0.1", port=0)
    port = server.start()
    try:
        base = f"http://127.0.0.1:{port}"
        assert get(base + "/healthz")[0] == 200
        assert get(base + "/readyz")[0] == 503
        state["ready"] = True
        assert get(base + "/readyz")[0] == 200
        status, body = get(base + "/metrics")
        assert status == 200
        assert 'edge_agent_deadletters_total{reason="corrupt_image"} 2.0' in body
        assert get(base + "/nope")[0] == 404
    finally:
        server.stop()


def test_readiness_probe_that_raises_answers_503() -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    server = HealthServer(registry=CollectorRegistry(), ready=broken, host="127.0.0.1", port=0)
    port = server.start()
    try:
        assert get(f"http://127.0.0.1:{port}/readyz")[0] == 503
    finally:
        server.stop()


def test_port_in_use_names_the_flag() -> None:
    first = HealthServer(registry=CollectorRegistry(), ready=lambda: True, host="127.0.0.1")
    port = first.start()
    try:
        second = HealthServer(
            registry=CollectorRegistry(), ready=lambda: True, host="127.0.0.1", port=port
        )
        with pytest.raises(AgentConfigError, match="--metrics-port"):
            second.start()
    finally:
        first.stop()


def test_every_metric_is_in_the_architecture_table_and_in_metrics_md() -> None:
    """The page an agent serves, docs/architecture.md's table and docs/metrics.md agree."""
    import re

    from tests.unit.test_deploy_files import ROOT, documented_metrics

    reg = CollectorRegistry()
    AgentMetrics(registry=reg)
    served = {f.name + ("_total" if f.type == "counter" else "") for f in reg.collect()}
    reference = (ROOT / "docs" / "metrics.md").read_text()
    in_reference = set(re.findall(r"^\| `(edge_agent_\w+)` \|", reference, re.MULTILINE))
    assert served == set(documented_metrics())
    assert served == in_reference
