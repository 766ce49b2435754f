"""The one client of an agent's ``/metrics`` and ``/readyz`` (:mod:`fleet.scrape`), against
the agent's real health server."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from edge_agent.health import HealthServer
from edge_agent.metrics import AgentMetrics
from fleet.scrape import NotReady, base_url, http_get, metric_sums, metric_value, wait_ready
from stream.broker import free_port


@pytest.fixture
def agent() -> Iterator[tuple[str, AgentMetrics, threading.Event]]:
    """``(host:port, metrics, ready)`` of a health server that is ready once ``ready`` is set."""
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry=registry)
    ready = threading.Event()
    server = HealthServer(registry=registry, ready=ready.is_set, host="127.0.0.1", port=0)
    port = server.start()
    try:
        yield f"127.0.0.1:{port}", metrics, ready
    finally:
        server.stop()


def test_base_url_takes_host_port_or_a_url() -> None:
    assert base_url("h:1") == "http://h:1"
    assert base_url("http://h:1/") == "http://h:1"
    assert base_url("https://h:1") == "https://h:1"


def test_http_get_returns_the_status_or_0_when_nothing_answers(agent: tuple) -> None:
    url, _, _ = agent
    assert http_get(f"http://{url}/readyz")[0] == 503
    assert http_get(f"http://{url}/healthz")[0] == 200
    status, error = http_get(f"http://127.0.0.1:{free_port()}/readyz", timeout=1)
    assert status == 0 and error


def test_metrics_are_read_by_name_labels_and_summed(agent: tuple) -> None:
    url, metrics, _ = agent
    metrics.deadletters.labels(reason="not_json").inc(2)
    metrics.deadletters.labels(reason="corrupt_image").inc(3)
    status, text = http_get(f"http://{url}/metrics")
    assert status == 200
    assert metric_value(text, "edge_agent_deadletters_total", {"reason": "not_json"}) == 2
    assert metric_value(text, "edge_agent_deadletters_total", {"reason": "nope"}) is None
    assert metric_sums(text)["edge_agent_deadletters_total"] == 5


def test_wait_ready_returns_when_every_agent_answers_200(agent: tuple) -> None:
    url, _, ready = agent
    rounds: list[int] = []

    def check() -> None:
        rounds.append(1)
        if len(rounds) == 3:
            ready.set()

    (got,) = wait_ready([url], timeout_s=30, check=check, poll_s=0.01).values()
    assert len(rounds) >= 3
    assert got.first_answer < got.ready  # answered 503 before it was ready


def test_wait_ready_names_the_agents_still_pending(agent: tuple) -> None:
    url, _, _ = agent
    silent = f"127.0.0.1:{free_port()}"
    with pytest.raises(NotReady, match=r"not ready after 0 s") as info:
        wait_ready([url, silent], timeout_s=0.2, poll_s=0.01, request_timeout_s=0.2)
    assert info.value.pending == sorted([url, silent])


def test_wait_ready_stops_when_the_check_raises(agent: tuple) -> None:
    url, _, _ = agent

    def exited() -> None:
        raise RuntimeError("the agent exited")

    with pytest.raises(RuntimeError, match="the agent exited"):
        wait_ready([url], timeout_s=30, check=exited)
