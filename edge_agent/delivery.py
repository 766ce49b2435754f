"""The producer side of the agent: results and dead letters sent asynchronously and
acknowledged all at once at a sync point, before any offset is committed.

kafka-python's idempotent producer cannot be reused once the broker has forgotten its
producer id (a broker restart: ``UnknownProducerIdError``, ``OutOfOrderSequenceNumber``),
so any failure closes it; :meth:`Delivery.ensure` builds a new one.
"""

from __future__ import annotations

import logging
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from stream.exceptions import BrokerError
from stream.kafka import make_producer
from stream.settings import KafkaSettings

logger = logging.getLogger(__name__)

#: Longest wait for the broker to acknowledge what was sent (then: failure, replay).
FLUSH_TIMEOUT_S = 15.0
#: Longest a send() waits for topic metadata while the broker is away.
MAX_BLOCK_MS = 5000


class DeliveryFailed(Exception):
    """A send, flush or commit failed; ``stage`` is ``produce``, ``commit`` or ``poll``."""

    def __init__(self, stage: str, exc: BaseException) -> None:
        super().__init__(f"{stage}: {type(exc).__name__}: {exc}")
        self.stage = stage
        self.exc = exc


class Delivery:
    """One producer (made on demand) and the futures of everything sent since the last sync."""

    def __init__(self, *, settings: KafkaSettings, client_id: str) -> None:
        self.settings = settings
        self.client_id = client_id
        self.producer: KafkaProducer | None = None
        self._futures: list[Any] = []

    @property
    def pending(self) -> int:
        """Sends not yet confirmed by :meth:`sync`."""
        return len(self._futures)

    def ensure(self) -> bool:
        """Have a producer; False (logged) when the broker cannot be reached."""
        if self.producer is not None:
            return True
        s = self.settings
        try:
            self.producer = make_producer(
                s,
                client_id=self.client_id,
                max_block_ms=MAX_BLOCK_MS,
                batch_size=256 * 1024,
                delivery_timeout_ms=s.request_timeout_ms + 10_000,
            )
        except (BrokerError, KafkaError) as exc:
            logger.warning("producer cannot start: %s", exc)
            return False
        return True

    def send(self, topic: str, value: bytes | None, key: bytes | None, headers: list[Any]) -> None:
        producer = self.producer
        if producer is None:
            raise DeliveryFailed("produce", RuntimeError("no producer"))
        try:
            self._futures.append(producer.send(topic, value=value, key=key, headers=headers))
        except KafkaError as exc:
            raise DeliveryFailed("produce", exc) from exc

    def sync(self) -> None:
        """Flush and check every send since the last sync; raises :class:`DeliveryFailed`."""
        if not self._futures:
            return
        producer = self.producer
        if producer is None:
            raise DeliveryFailed("produce", RuntimeError("no producer"))
        try:
            producer.flush(timeout=FLUSH_TIMEOUT_S)
        except KafkaError as exc:
            raise DeliveryFailed("produce", exc) from exc
        for f in self._futures:
            if not f.is_done:
                raise DeliveryFailed("produce", TimeoutError("send not acknowledged in time"))
            if f.exception is not None:
                raise DeliveryFailed("produce", f.exception)
        self._futures.clear()

    def reset(self) -> None:
        """Forget unconfirmed sends and drop the producer (a new one is made by ensure())."""
        self._futures.clear()
        if self.producer is not None:
            try:
                self.producer.close(timeout=0)
            except Exception:  # noqa: BLE001  it failed already; only release it
                logger.debug("closing the failed producer raised", exc_info=True)
            self.producer = None

    def close(self, timeout_s: float = 5.0) -> None:
        if self.producer is not None:
            try:
                self.producer.close(timeout=timeout_s)
            except Exception:  # noqa: BLE001
                logger.exception("closing the producer failed")
            self.producer = None
