"""HTTP endpoints on one port, served from a daemon thread.

* ``/metrics``: Prometheus text format of the agent's registry.
* ``/healthz``: 200 while the process runs (liveness).
* ``/readyz``: 200 when ``ready()`` is true (connected to the broker, model loaded),
  503 otherwise (readiness; Kubernetes stops routing, Prometheus sees edge_agent_ready 0).
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


class HealthServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` (port 0 = any free one)."""

    def __init__(
        self,
        *,
        registry: CollectorRegistry,
        ready: Callable[[], bool],
        host: str = "0.0.0.0",
        port: int = 0,
    ) -> None:
        self.registry = registry
        self._ready = ready
        self.host = host
        self.requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            msg = "HealthServer.port read before start()"
            raise RuntimeError(msg)
        return int(self._server.server_address[1])

    def start(self) -> int:
        """Bind and serve in a daemon thread; returns the bound port."""
        handler = _make_handler(self.registry, self._ready)
        try:
            server = ThreadingHTTPServer((self.host, self.requested_port), handler)
        except OSError as exc:
            msg = (
                f"cannot listen on {self.host}:{self.requested_port} for metrics and health "
                f"({exc}); choose another --metrics-port (0 = any free port)"
            )
            raise AgentConfigError(msg) from exc
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="edge-agent-http",
            daemon=True,
        )
        self._thread.start()
        logger.info(
            'http listening host="%s" port=%d paths="/metrics /healthz /readyz"',
            self.host,
            self.port,
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
    registry: CollectorRegistry, ready: Callable[[], bool]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "edge-agent"

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._send(200, b"ok\n")
            elif path == "/readyz":
                try:
                    ok = bool(ready())
                except Exception:  # noqa: BLE001  a probe must answer, never raise
                    logger.exception("readiness check failed")
                    ok = False
                self._send(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

        def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            logger.debug("http " + format, *args)

    return Handler
