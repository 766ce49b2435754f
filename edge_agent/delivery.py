"""The producer side of the agent: results and dead letters sent asynchronously and
acknowledged all at once at a sync point, before any offset is committed.

Two kinds of failure (docs/agent.md, "Delivery"):

* **Transient** (broker away, timeout, idempotent producer fenced after a broker restart):
  :class:`DeliveryFailed` is raised; the pipeline drops its in-memory work, replays from
  the last commit and backs off. An idempotent producer cannot always be reused once the
  broker has forgotten its producer id, so the producer is closed and :meth:`Delivery.ensure`
  builds a new one from the transport (:mod:`edge_agent.transport`).
* **Permanent** for one record (too large for the topic, topic missing or not authorized:
  :data:`edge_agent.transport.PERMANENT_CODES`): no retry can fix it, so it is not an
  outage. :meth:`Delivery.sync` returns those sends (their tokens) and the pipeline answers
  them another way (:mod:`edge_agent.deadletters`) instead of replaying them forever.
"""

from __future__ import annotations

import logging
from typing import Any

from edge_agent.exceptions import AgentError
from edge_agent.transport import Producer, Transport, TransportError

logger = logging.getLogger(__name__)

#: Longest wait for the broker to acknowledge what was sent (then: failure, replay).
FLUSH_TIMEOUT_S = 15.0
#: Longest a send() waits for topic metadata or queue room while the broker is away.
MAX_BLOCK_MS = 5000

#: A send that failed for good: (its token, the error).
Refused = tuple[Any, TransportError]


class DeliveryFailed(AgentError):
    """A send, flush or commit failed for a reason a retry may fix; ``stage`` is
    ``produce``, ``commit`` or ``poll``; ``code`` is the client's error code, if any."""

    def __init__(self, stage: str, exc: BaseException) -> None:
        super().__init__(f"{stage}: {type(exc).__name__}: {exc}")
        self.stage = stage
        self.exc = exc
        self.code = getattr(exc, "code", "")


class Delivery:
    """One producer (made on demand) and the sends made since the last sync."""

    def __init__(
        self,
        *,
        transport: Transport,
        client_id: str,
        request_timeout_ms: int,
        max_bytes: int = 1024 * 1024,
    ) -> None:
        self.transport = transport
        self.client_id = client_id
        self.request_timeout_ms = request_timeout_ms
        #: Largest record sent (larger: refused for good before it leaves).
        self.max_bytes = max_bytes
        self.producer: Producer | None = None
        self._pending = 0
        self._refused: list[Refused] = []

    @property
    def pending(self) -> int:
        """Sends not yet confirmed by :meth:`sync`."""
        return self._pending

    def ensure(self) -> bool:
        """Have a producer; False (logged) when the broker cannot be reached."""
        if self.producer is not None:
            return True
        try:
            self.producer = self.transport.producer(
                client_id=self.client_id,
                max_block_ms=MAX_BLOCK_MS,
                delivery_timeout_ms=self.request_timeout_ms + 10_000,
                max_bytes=self.max_bytes,
            )
        except TransportError as exc:
            logger.warning("producer cannot start: %s", exc)
            return False
        return True

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: list[Any],
        token: Any = None,
    ) -> None:
        """Queue one message; ``token`` comes back from :meth:`sync` if it fails for good."""
        producer = self.producer
        if producer is None:
            raise DeliveryFailed("produce", RuntimeError("no producer"))
        self._pending += 1
        try:
            producer.send(topic, value, key, headers, token)
        except TransportError as exc:
            if exc.permanent:
                self._refused.append((token, exc))
                return
            raise DeliveryFailed("produce", exc) from exc

    def sync(self) -> list[Refused]:
        """Flush and check every send since the last sync.

        Returns the sends refused for good (to be answered another way); raises
        :class:`DeliveryFailed` on anything a retry may fix.
        """
        refused, self._refused = self._refused, []
        if not self._pending:
            return refused
        producer = self.producer
        if producer is None:
            raise DeliveryFailed("produce", RuntimeError("no producer"))
        try:
            report = producer.flush(FLUSH_TIMEOUT_S)
        except TransportError as exc:
            raise DeliveryFailed("produce", exc) from exc
        self._pending = 0
        return refused + report.permanent

    def reset(self) -> None:
        """Forget unconfirmed sends and drop the producer (a new one is made by ensure())."""
        self._pending = 0
        self._refused = []
        if self.producer is not None:
            try:
                self.producer.close(0)
            except Exception:  # noqa: BLE001  it failed already; only release it
                logger.debug("closing the failed producer raised", exc_info=True)
            self.producer = None

    def close(self, timeout_s: float = 5.0) -> None:
        if self.producer is not None:
            try:
                self.producer.close(timeout_s)
            except Exception:  # noqa: BLE001
                logger.exception("closing the producer failed")
            self.producer = None
