"""The producer side of the agent: results and dead letters sent asynchronously, and
which of them the broker has acknowledged, before any offset is committed.

Sends are grouped in *epochs*: the pipeline closes one (:meth:`Delivery.mark`) each time
it notes the offsets its sends so far would make committable. :meth:`Delivery.settle`
collects the acknowledgements the client has, without waiting (or waiting for all), and
names the newest epoch whose sends, and every earlier one's, are all acknowledged: the
offsets noted at its close may be committed. The agent's thread so never waits for the
broker in steady state (docs/agent.md, "Delivery").

Two kinds of failure (docs/agent.md, "Delivery"):

* **Transient** (broker away, timeout, idempotent producer fenced after a broker restart):
  :class:`DeliveryFailed` is raised; the pipeline drops its in-memory work, replays from
  the last commit and backs off. An idempotent producer cannot always be reused once the
  broker has forgotten its producer id, so the producer is closed and :meth:`Delivery.ensure`
  builds a new one from the transport (:mod:`edge_agent.transport`).
* **Permanent** for one record (too large for the topic, topic missing or not authorized:
  :data:`edge_agent.transport.PERMANENT_CODES`): no retry can fix it, so it is not an
  outage. :meth:`Delivery.settle` returns those sends (their tokens) and the pipeline
  answers them another way (:mod:`edge_agent.deadletters`) instead of replaying them
  forever.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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


@dataclass(slots=True)
class _Sent:
    """The token the producer carries for one send: its epoch and the caller's token."""

    epoch: int
    token: Any


class Delivery:
    """One producer (made on demand) and its sends not acknowledged yet, by epoch."""

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
        #: The epoch new sends join; epoch -> its sends not resolved yet.
        self._epoch = 0
        self._open: dict[int, int] = {}
        #: Sends since the last :meth:`mark`.
        self.unmarked = 0
        self._refused: list[Refused] = []

    @property
    def pending(self) -> int:
        """Sends not resolved yet (acknowledged or failed)."""
        return sum(self._open.values())

    def mark(self) -> int:
        """Close the current epoch (later sends join the next); returns its number."""
        epoch = self._epoch
        self._epoch += 1
        self.unmarked = 0
        return epoch

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
        """Queue one message; ``token`` comes back from :meth:`settle` if it fails for good."""
        producer = self.producer
        if producer is None:
            raise DeliveryFailed("produce", RuntimeError("no producer"))
        epoch = self._epoch
        self._open[epoch] = self._open.get(epoch, 0) + 1
        self.unmarked += 1
        try:
            producer.send(topic, value, key, headers, _Sent(epoch, token))
        except TransportError as exc:
            self._resolve(epoch)  # it never left
            if exc.permanent:
                self._refused.append((token, exc))
                return
            raise DeliveryFailed("produce", exc) from exc

    def _resolve(self, epoch: int) -> None:
        left = self._open.get(epoch, 0) - 1
        if left > 0:
            self._open[epoch] = left
        else:
            self._open.pop(epoch, None)

    def settle(self, *, wait: bool) -> tuple[list[Refused], int]:
        """Collect what the broker answered: ``(refused, settled)``.

        ``refused`` are the sends refused for good since the last call (to be answered
        another way); ``settled`` is the newest closed epoch whose sends and every earlier
        epoch's are all acknowledged (-1: none yet). ``wait`` waits for every send (at most
        ``FLUSH_TIMEOUT_S``): then all of them are settled or :class:`DeliveryFailed` is
        raised. Raises :class:`DeliveryFailed` on anything a retry may fix.
        """
        refused, self._refused = self._refused, []
        if self._open:
            producer = self.producer
            if producer is None:
                raise DeliveryFailed("produce", RuntimeError("no producer"))
            try:
                done = producer.resolved(FLUSH_TIMEOUT_S if wait else 0.0)
            except TransportError as exc:
                raise DeliveryFailed("produce", exc) from exc
            transient: TransportError | None = None
            for sent, error in done:
                self._resolve(sent.epoch)
                if error is None:
                    continue
                if error.permanent:
                    refused.append((sent.token, error))
                elif transient is None:
                    transient = error
            if transient is not None:
                raise DeliveryFailed("produce", transient)
            if wait and self._open:
                msg = f"{self.pending} send(s) not acknowledged within {FLUSH_TIMEOUT_S:.0f} s"
                raise DeliveryFailed("produce", TransportError(msg))
        oldest_open = min(self._open) if self._open else self._epoch
        return refused, oldest_open - 1

    def sync(self) -> list[Refused]:
        """Wait until every send is acknowledged; returns the sends refused for good."""
        refused, _settled = self.settle(wait=True)
        return refused

    def reset(self) -> None:
        """Forget unconfirmed sends and drop the producer (a new one is made by ensure())."""
        self._open.clear()
        self.unmarked = 0
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
