"""HTTP endpoints on one port, served from a daemon thread.

* ``/metrics``: Prometheus text format of the agent's registry.
* ``/healthz``: 200 while the agent is alive (liveness); 503 with the reason when
  ``alive()`` says why not (the pipeline loop has not advanced for its stall limit).
* ``/readyz``: 200 when ``ready()`` is true (connected to the broker, model loaded),
  503 otherwise (readiness; Kubernetes stops routing, Prometheus sees edge_agent_ready 0).

Bounded: every connection gets a socket timeout (an idle or slow client is dropped after
``timeout_s``, it does not hold a thread forever) and at most ``max_connections`` are
served at once; one more is answered 503 and closed at once, without a thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from edge_agent.exceptions import AgentConfigError

logger = logging.getLogger(__name__)

#: Longest wait for a client's request or for it to take the answer. Probes and
#: Prometheus send their request at once and answer within milliseconds.
DEFAULT_TIMEOUT_S = 5.0
#: Connections served at once (a probe, a scrape or two, `edgeinfer top`: a handful).
DEFAULT_MAX_CONNECTIONS = 16
_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
    b"Connection: close\r\n\r\nbusy\n"
)


def _always_alive() -> str | None:
    return None


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` of them."""

    daemon_threads = True
    request_queue_size = 64  # accepted and answered (or turned away) instead of left queued

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], limit: int
    ) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(limit)
        #: Connections answered 503 because every slot was taken.
        self.turned_away = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.turned_away += 1
            try:
                request.settimeout(0.5)
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)  # starts the thread
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class HealthServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` (port 0 = any free one)."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        alive: Callable[[], str | None] = _always_alive,
        host: str = "0.0.0.0",
        port: int = 0,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        """``alive()`` returns None while the process is healthy, else the reason it is not."""
        self.registry = registry
        self._ready = ready
        self._alive = alive
        self.host = host
        self.requested_port = port
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._server: _BoundedServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            msg = "HealthServer.port read before start()"
            raise RuntimeError(msg)
        return int(self._server.server_address[1])

    @property
    def turned_away(self) -> int:
        """Connections refused (503) because ``max_connections`` were being served."""
        return self._server.turned_away if self._server is not None else 0

    def start(self) -> int:
        """Bind and serve in a daemon thread; returns the bound port."""
        handler = _make_handler(self.registry, self._ready, self._alive, self.timeout_s)
        try:
            server = _BoundedServer((self.host, self.requested_port), handler, self.max_connections)
        except OSError as exc:
            msg = (
                f"cannot listen on {self.host}:{self.requested_port} for metrics and health "
                f"({exc}); choose another --metrics-port (0 = any free port)"
            )
            raise AgentConfigError(msg) from exc
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="edge-agent-http",
            daemon=True,
        )
        self._thread.start()
        logger.info(
            'http listening host="%s" port=%d paths="/metrics /healthz /readyz" '
            "timeout_s=%.0f max_connections=%d",
            self.host,
            self.port,
            self.timeout_s,
            self.max_connections,
        )
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def _make_handler(
    registry: CollectorRegistry,
    ready: Callable[[], bool],
    alive: Callable[[], str | None],
    timeout_s: float,
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "edge-agent"
        timeout = timeout_s  # socket timeout of every read and write (StreamRequestHandler)

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                problem = _ask(alive, "the liveness check failed: see the log", "liveness check")
                if problem is None:
                    self._send(200, b"ok\n")
                else:
                    self._send(503, f"{problem}\n".encode())
            elif path == "/readyz":
                ok = _ask(ready, False, "readiness check")
                self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except TimeoutError:
                logger.debug("http client did not take the answer within %.0f s", timeout_s)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            logger.debug("http " + format, *args)

    return Handler


def _ask(check: Callable[[], Any], failed: Any, what: str) -> Any:
    """``check()``; ``failed`` if it raises (a probe must answer, never raise)."""
    try:
        return check()
    except Exception:  # noqa: BLE001
        logger.exception("%s failed", what)
        return failed
