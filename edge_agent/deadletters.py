"""How the agent dead-letters an input: the one policy for every per-record failure.

Every input gets a result or a dead letter (docs/agent.md). A dead letter carries the
original key, value and headers plus ``error-type`` (a :data:`Reason`), ``error-message``,
the source topic/partition/offset and the agent id (docs/wire-format.md). Each one is
counted in ``edge_agent_deadletters_total{reason}``; the first of each reason every
:data:`LOG_EVERY_S` is logged as ``topic[partition] offset`` with the message.

When the broker refuses a dead letter for good (larger than the topic allows, topic missing
or not authorized), it is sent again **without** the original value and headers, with the
value's size and sha256 (:meth:`DeadLetters.send_stripped`). If even that is refused, the
input is dropped, logged and counted (``edge_agent_undeliverable_total``): a record that
can never be produced never blocks its partition.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from edge_agent.delivery import Delivery
from edge_agent.transport import PERMANENT_CODES, TransportError
from stream import topics
from stream.codecs import dead_letter_headers
from stream.exceptions import DecodeReason

if TYPE_CHECKING:
    from edge_agent.metrics import AgentMetrics

logger = logging.getLogger(__name__)

#: Why the agent itself could not answer a well-formed input.
AgentReason = Literal[
    # The model raised on this input (a failing batch is retried one input at a time).
    "inference_error",
    # The model's output for this input is not finite or not shaped (1, classes).
    "bad_model_output",
    # The result could not be produced for good (e.g. larger than the results topic allows).
    "undeliverable_result",
    # A bug in the agent's own handling of this input (never a crash: a dead letter).
    "internal_error",
]
#: Every ``error-type`` a dead letter can have: decode failures and the agent's own.
Reason = DecodeReason | AgentReason
REASONS: tuple[str, ...] = (*get_args(DecodeReason), *get_args(AgentReason))
#: At most one log line per dead-letter reason in this many seconds (all are counted).
LOG_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class DeadLetterSent:
    """A dead letter in flight: what to send again, stripped, if the broker refuses it."""

    value: bytes | None
    key: bytes | None
    partition: int
    offset: int
    reason: str
    message: str
    stripped: bool = False


@dataclass(kw_only=True, eq=False)
class DeadLetters:
    """Builds, sends, logs and counts the dead letters of one input topic."""

    delivery: Delivery
    metrics: AgentMetrics
    source_topic: str
    topic: str
    agent_id: str
    #: Dead letters sent (for the summary line and tests).
    count: int = field(default=0, init=False)
    _log_at: dict[str, float] = field(default_factory=dict, init=False)

    def send(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: Any,
        partition: int,
        offset: int,
        reason: Reason,
        message: str,
    ) -> None:
        """Dead-letter one input (raises ``DeliveryFailed`` only on a transient failure)."""
        self._log(reason, partition, offset, message)
        hdrs = self._headers(headers, partition, offset, reason, message)
        token = DeadLetterSent(value, key, partition, offset, reason, message)
        self.delivery.send(self.topic, value, key, hdrs, token)
        self.count += 1
        self.metrics.deadletters.labels(reason=reason).inc()

    def send_stripped(self, sent: DeadLetterSent, error: TransportError) -> None:
        """Send ``sent`` again without its value and original headers (the broker refused it)."""
        value = sent.value or b""
        extra = [
            (topics.H_ORIGINAL_SIZE, str(len(value)).encode()),
            (topics.H_ORIGINAL_SHA256, hashlib.sha256(value).hexdigest().encode()),
            (topics.H_VALUE_DROPPED, _reason_text(error).encode()),
        ]
        hdrs = self._headers(None, sent.partition, sent.offset, sent.reason, sent.message)
        token = DeadLetterSent(
            None, sent.key, sent.partition, sent.offset, sent.reason, sent.message, True
        )
        logger.warning(
            "%s[%d] offset=%d: the dead letter was refused (%s); sent again without the "
            "value (%d bytes) and original headers",
            self.source_topic,
            sent.partition,
            sent.offset,
            error,
            len(value),
        )
        self.metrics.undeliverable.labels(output="deadletter", code=_code(error)).inc()
        key = sent.key if sent.key is None or len(sent.key) <= MAX_KEY_BYTES else None
        self.delivery.send(self.topic, None, key, hdrs + extra, token)

    def dropped(self, sent: DeadLetterSent, error: TransportError) -> None:
        """Even the stripped dead letter was refused: log and count; the input is committed."""
        logger.error(
            "%s[%d] offset=%d: the dead letter (reason=%s) cannot be produced to %s at all "
            "(%s); the input is skipped. Check that the topic exists and this agent may "
            "write to it",
            self.source_topic,
            sent.partition,
            sent.offset,
            sent.reason,
            self.topic,
            error,
        )
        self.metrics.undeliverable.labels(output="dropped", code=_code(error)).inc()

    def _headers(
        self, original: Any, partition: int, offset: int, reason: str, message: str
    ) -> list[Any]:
        return dead_letter_headers(
            list(original or []),
            error_type=reason,
            error_message=message,
            topic=self.source_topic,
            partition=partition,
            offset=offset,
            agent_id=self.agent_id,
        )

    def _log(self, reason: str, partition: int, offset: int, message: str) -> None:
        now = time.monotonic()
        if now < self._log_at.get(reason, 0.0):
            return
        self._log_at[reason] = now + LOG_EVERY_S
        logger.warning(
            '%s[%d] offset=%d dead-lettered reason="%s": %s (further ones of this reason in '
            "the next %.0f s are only counted in edge_agent_deadletters_total)",
            self.source_topic,
            partition,
            offset,
            reason,
            message,
            LOG_EVERY_S,
        )


#: A key longer than this is left off a stripped dead letter (it may be what was too large).
MAX_KEY_BYTES = 1024


def _code(error: TransportError) -> str:
    """The error code as a bounded metric label."""
    return error.code if error.code in PERMANENT_CODES else "other"


def _reason_text(error: TransportError) -> str:
    text = f"{error.code or 'refused'}: {error}"
    return text[:300]
