"""The agent's Kafka transport interface: one consumer and one producer, any client library.

The pipeline (:mod:`edge_agent.pipeline`) speaks only to :class:`Consumer` and
:class:`Producer`; each client library is one module of this package
(:mod:`~edge_agent.transport.kafka_python`, :mod:`~edge_agent.transport.confluent`),
chosen by name through :func:`edge_agent.transport.make_transport`.

Every failure the broker or the client reports is a :class:`TransportError` that keeps the
client's error code (``MESSAGE_TOO_LARGE``, ``TOPIC_AUTHORIZATION_FAILED``, ...), so the
delivery layer can tell a record that can never be produced from an outage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from edge_agent.exceptions import AgentError

Client = Literal["kafka-python", "confluent"]
CLIENTS: tuple[Client, ...] = ("kafka-python", "confluent")
#: What ``--client`` accepts: a client, or ``auto`` (confluent when importable, else
#: kafka-python; :func:`edge_agent.transport.resolve_client`).
ClientChoice = Literal["auto", "kafka-python", "confluent"]
CLIENT_CHOICES: tuple[ClientChoice, ...] = ("auto", *CLIENTS)

#: ``on_assigned(partitions)`` / ``on_revoked(partitions)``, partitions of the input topic.
RebalanceCallback = Callable[[set[int]], None]

#: Error codes (Kafka protocol names) that no retry can fix for the record that got them:
#: the record is too large for the topic or the broker, or the agent may not / cannot write
#: to the topic. Every other code is an outage to wait out.
PERMANENT_CODES = frozenset(
    {
        "MESSAGE_TOO_LARGE",
        "RECORD_LIST_TOO_LARGE",
        "INVALID_RECORD",
        "CORRUPT_MESSAGE",
        "TOPIC_AUTHORIZATION_FAILED",
        "CLUSTER_AUTHORIZATION_FAILED",
        "UNKNOWN_TOPIC_OR_PARTITION",
        "INVALID_TOPIC_EXCEPTION",
    }
)
#: The clients' own names for those codes -> the protocol's (one label per error).
_ALIASES = {
    "MSG_SIZE_TOO_LARGE": "MESSAGE_TOO_LARGE",  # librdkafka
    "MESSAGE_SIZE_TOO_LARGE": "MESSAGE_TOO_LARGE",  # kafka-python
    "UNKNOWN_TOPIC_OR_PART": "UNKNOWN_TOPIC_OR_PARTITION",  # librdkafka (broker)
    "UNKNOWN_TOPIC": "UNKNOWN_TOPIC_OR_PARTITION",  # librdkafka (local)
    "TOPIC_EXCEPTION": "INVALID_TOPIC_EXCEPTION",  # librdkafka
}


def error_code(name: str) -> str:
    """A client's error name as the Kafka protocol's (librdkafka's local ``_`` dropped)."""
    name = name.lstrip("_")
    return _ALIASES.get(name, name)


class TransportError(AgentError):
    """The client or the broker failed a poll, send, flush or commit.

    ``code`` is the client's error code name ("" when it gave none); ``failed`` holds the
    tokens of the sends that failed permanently (see :meth:`Producer.send`).
    """

    def __init__(self, message: str, *, code: str = "", failed: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.code = error_code(code)
        self.failed = failed

    @property
    def permanent(self) -> bool:
        """No retry can fix it (see :data:`PERMANENT_CODES`)."""
        return self.code in PERMANENT_CODES


class Record(Protocol):
    """One consumed message (kafka-python's ``ConsumerRecord`` has these attributes)."""

    value: bytes | None
    key: bytes | None
    headers: Any
    offset: int
    timestamp: int


class Consumer(Protocol):
    """A group consumer of one topic with manual commits."""

    def poll(self, timeout_ms: int, max_records: int) -> dict[int, list[Any]]:
        """``{partition: records in offset order}``; rebalance callbacks run inside."""
        ...

    def commit(self, offsets: dict[int, int], *, asynchronous: bool = False) -> None:
        """Commit ``{partition: next offset to read}``: synchronously (a failure raises),
        or ``asynchronous``-ly (returns at once; a failure is logged when the client
        reports it, and the next commit supersedes this one)."""
        ...

    def seek(self, partition: int, offset: int) -> None: ...

    def position(self, partition: int) -> int | None:
        """The next offset this consumer will read from ``partition``; None if unknown."""
        ...

    def lag(self, partition: int, position: int | None) -> int | None:
        """High watermark minus ``position`` (the consumer's own when None); None if unknown."""
        ...

    def coordinator_known(self) -> bool:
        """The group's coordinator is known and reachable (readiness)."""
        ...

    def partition_count(self) -> int | None:
        """How many partitions the topic has (from metadata; None if unknown)."""
        ...

    def close(self) -> None: ...


#: A send the client has finished with: (its token, None when acknowledged, else the error).
Resolved = tuple[Any, TransportError | None]


class Producer(Protocol):
    """Asynchronous sends; :meth:`resolved` reports each one once it is acknowledged or
    failed, without waiting or waiting for all of them."""

    def send(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Any, token: Any
    ) -> None:
        """Queue one message. ``token`` names it in :meth:`resolved`. Raises
        :class:`TransportError` if it cannot be queued (``permanent`` when it never can,
        e.g. larger than the producer's limit)."""
        ...

    def resolved(self, timeout_s: float) -> list[Resolved]:
        """Every send resolved since the last call, each reported once: acknowledged
        (error None) or failed (a :class:`TransportError`, ``permanent`` when no retry can
        fix it). ``timeout_s`` > 0 waits until every send is resolved or the time is up
        (what is still outstanding then stays so); 0 only collects what the client has.
        Raises :class:`TransportError` when the producer itself failed for good."""
        ...

    def close(self, timeout_s: float) -> None: ...


@dataclass(frozen=True)
class ConsumerOptions:
    """The agent's consumer settings, the same for every client library."""

    group_id: str
    client_id: str
    max_poll_records: int
    fetch_max_wait_ms: int
    #: One fetch holds at most about one such message: a device has little memory, and a
    #: backlog must not be pulled in 32 MiB at a time.
    max_message_bytes: int
    max_poll_interval_ms: int
    #: Static membership (KIP-345): a restarted member with the same id takes its
    #: partitions back without a rebalance (within the session timeout).
    group_instance_id: str | None = None
    #: Static assignment: read exactly these partitions, no group membership (offsets are
    #: still committed under ``group_id``); None = join the group.
    partitions: tuple[int, ...] | None = None

    @property
    def fetch_bytes(self) -> int:
        return self.max_message_bytes + 65536


class Transport(Protocol):
    """Makes the agent's consumer and producer (one client library)."""

    name: str

    def consumer(
        self,
        topic: str,
        options: ConsumerOptions,
        *,
        on_assigned: RebalanceCallback,
        on_revoked: RebalanceCallback,
    ) -> Consumer: ...

    def producer(
        self, *, client_id: str, max_block_ms: int, delivery_timeout_ms: int, max_bytes: int
    ) -> Producer:
        """A producer refusing (permanently) any record over ``max_bytes``."""
        ...
