"""The agent's Kafka transport: a small interface (:mod:`.base`) and one module per client.

* ``confluent`` (librdkafka through ``confluent-kafka``, in the ``agent`` extra):
  :mod:`.confluent`. It fetches and produces from librdkafka's own C threads, so the
  Python side only decodes and infers.
* ``kafka-python`` (pure Python, a base dependency): :mod:`.kafka_python`, the fallback.
* ``auto`` (the default): :func:`resolve_client` picks confluent when it imports, else
  kafka-python.

:data:`TRANSPORTS` is the registry (client name -> module and class), imported lazily so
an agent on one client never imports the other library.
"""

from __future__ import annotations

import importlib

from edge_agent.transport.base import (
    CLIENT_CHOICES,
    CLIENTS,
    PERMANENT_CODES,
    Client,
    ClientChoice,
    Consumer,
    ConsumerOptions,
    Producer,
    RebalanceCallback,
    Record,
    Resolved,
    Transport,
    TransportError,
)
from stream.settings import KafkaSettings

__all__ = [
    "CLIENTS",
    "CLIENT_CHOICES",
    "PERMANENT_CODES",
    "TRANSPORTS",
    "Client",
    "ClientChoice",
    "Consumer",
    "ConsumerOptions",
    "Producer",
    "RebalanceCallback",
    "Resolved",
    "Record",
    "Transport",
    "TransportError",
    "client_version",
    "make_transport",
    "resolve_client",
]

#: client name -> (module, class) of its transport.
TRANSPORTS: dict[Client, tuple[str, str]] = {
    "kafka-python": ("edge_agent.transport.kafka_python", "KafkaPythonTransport"),
    "confluent": ("edge_agent.transport.confluent", "ConfluentTransport"),
}


#: client name -> the module whose import proves the library is usable.
_LIBRARIES: dict[Client, str] = {"kafka-python": "kafka", "confluent": "confluent_kafka"}


def resolve_client(choice: str) -> Client:
    """The client for ``choice`` (one of :data:`CLIENT_CHOICES`): ``auto`` is confluent
    when ``confluent_kafka`` imports (librdkafka: measured faster on every benchmark case,
    docs/benchmarks.md), else kafka-python; a named client is itself."""
    if choice == "auto":
        try:
            importlib.import_module(_LIBRARIES["confluent"])
        except ImportError:
            return "kafka-python"
        return "confluent"
    if choice not in CLIENTS:
        msg = f"unknown Kafka client {choice!r}; choose one of {', '.join(CLIENT_CHOICES)}"
        raise ValueError(msg)
    return choice  # type: ignore[return-value]


def client_version(client: Client) -> str:
    """The library's version (confluent: ``confluent-kafka/librdkafka``), or ``unknown``."""
    try:
        module = importlib.import_module(_LIBRARIES[client])
    except ImportError:
        return "unknown"
    if client == "confluent":
        return f"{module.version()[0]}/{module.libversion()[0]}"
    return str(getattr(module, "__version__", "unknown"))


def make_transport(client: str, settings: KafkaSettings) -> Transport:
    """The transport for ``client`` (one of :data:`CLIENT_CHOICES`; ``auto`` resolved by
    :func:`resolve_client`)."""
    module, cls = TRANSPORTS[resolve_client(client)]
    transport: Transport = getattr(importlib.import_module(module), cls)(settings)
    return transport
