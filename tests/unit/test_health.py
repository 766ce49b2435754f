"""The health server on real sockets: timeouts, the connection cap, /healthz's verdict."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry

from edge_agent.health import HealthServer

TIMEOUT_S = 0.5
SLOTS = 4


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:  # noqa: S310
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture
def serve() -> Iterator[Callable[..., HealthServer]]:
    servers: list[HealthServer] = []

    def start(alive: Callable[[], str | None] = lambda: None) -> HealthServer:
        server = HealthServer(
            registry=CollectorRegistry(),
            ready=lambda: True,
            alive=alive,
            host="127.0.0.1",
            port=0,
            timeout_s=TIMEOUT_S,
            max_connections=SLOTS,
        )
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def idle_connections(port: int, n: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]


def test_idle_connections_are_dropped_after_the_timeout(serve: Callable[..., HealthServer]) -> None:
    server = serve()
    idle = idle_connections(server.port, SLOTS)
    try:
        started = time.monotonic()
        for conn in idle:
            assert conn.recv(1) == b""  # the server hung up on the silent client
        assert time.monotonic() - started < TIMEOUT_S + 3
    finally:
        for conn in idle:
            conn.close()
    assert get(server.port, "/healthz") == (200, "ok\n")


def test_connections_over_the_cap_are_turned_away_without_a_thread(
    serve: Callable[..., HealthServer],
) -> None:
    server = serve()
    threads_before = threading.active_count()
    most = 0
    idle = idle_connections(server.port, SLOTS + 20)
    try:
        answers = []
        for conn in idle:  # every one is closed soon: turned away (503) or timed out
            answers.append(conn.recv(200))
            most = max(most, threading.active_count())
        assert most <= threads_before + SLOTS
        busy = [a for a in answers if a]
        assert busy and all(a.startswith(b"HTTP/1.0 503") and a.endswith(b"busy\n") for a in busy)
        assert server.turned_away == len(busy) >= 20 - SLOTS
    finally:
        for conn in idle:
            conn.close()
    assert get(server.port, "/healthz") == (200, "ok\n")


def test_healthz_answers_the_liveness_verdict(serve: Callable[..., HealthServer]) -> None:
    verdict: list[str | None] = [None]
    server = serve(alive=lambda: verdict[0])
    assert get(server.port, "/healthz") == (200, "ok\n")
    verdict[0] = "pipeline loop stuck: no step for 40 s"
    assert get(server.port, "/healthz") == (503, "pipeline loop stuck: no step for 40 s\n")
    assert get(server.port, "/readyz") == (200, "ready\n")  # readiness is another question


def test_a_liveness_check_that_raises_is_a_failure(serve: Callable[..., HealthServer]) -> None:
    def broken() -> str | None:
        raise RuntimeError("bug")

    server = serve(alive=broken)
    assert get(server.port, "/healthz") == (503, "the liveness check failed: see the log\n")
