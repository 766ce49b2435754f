"""The producer side of the agent: results and dead letters sent asynchronously and
acknowledged all at once at a sync point, before any offset is committed.

An idempotent producer cannot always be reused once the broker has forgotten its producer
id (a broker restart: ``UnknownProducerIdError``, ``OutOfOrderSequenceNumber``), so any
failure closes it; :meth:`Delivery.ensure` builds a new one from the transport
(:mod:`edge_agent.transport`).
"""

from __future__ import annotations

import logging
from typing import Any

from edge_agent.transport import Producer, Transport, TransportError

logger = logging.getLogger(__name__)

#: Longest wait for the broker to acknowledge what was sent (then: failure, replay).
FLUSH_TIMEOUT_S = 15.0
#: Longest a send() waits for topic metadata or queue room while the broker is away.
MAX_BLOCK_MS = 5000


class DeliveryFailed(Exception):
    """A send, flush or commit failed; ``stage`` is ``produce``, ``commit`` or ``poll``."""

    def __init__(self, stage: str, exc: BaseException) -> None:
        super().__init__(f"{stage}: {type(exc).__name__}: {exc}")
        self.stage = stage
        self.exc = exc


class Delivery:
    """One producer (made on demand) and the count of everything sent since the last sync."""

    def __init__(self, *, transport: Transport, client_id: str, request_timeout_ms: int) -> None:
        self.transport = transport
        self.client_id = client_id
        self.request_timeout_ms = request_timeout_ms
        self.producer: Producer | None = None
        self._pending = 0

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
            )
        except TransportError as exc:
            logger.warning("producer cannot start: %s", exc)
            return False
        return True

    def send(self, topic: str, value: bytes | None, key: bytes | None, headers: list[Any]) -> None:
        producer = self.producer
        if producer is None:
            raise DeliveryFailed("produce", RuntimeError("no producer"))
        try:
            producer.send(topic, value, key, headers)
        except TransportError as exc:
            raise DeliveryFailed("produce", exc) from exc
        self._pending += 1

    def sync(self) -> None:
        """Flush and check every send since the last sync; raises :class:`DeliveryFailed`."""
        if not self._pending:
            return
        producer = self.producer
        if producer is None:
            raise DeliveryFailed("produce", RuntimeError("no producer"))
        try:
            producer.flush(FLUSH_TIMEOUT_S)
        except TransportError as exc:
            raise DeliveryFailed("produce", exc) from exc
        self._pending = 0

    def reset(self) -> None:
        """Forget unconfirmed sends and drop the producer (a new one is made by ensure())."""
        self._pending = 0
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
