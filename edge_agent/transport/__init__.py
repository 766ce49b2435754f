"""The agent's Kafka transport: a small interface (:mod:`.base`) and one module per client.

* ``kafka-python`` (default, pure Python): :mod:`.kafka_python`.
* ``confluent`` (librdkafka through ``confluent-kafka``, ``pip install
  'edgeinfer[confluent]'``): :mod:`.confluent`. It fetches and produces from librdkafka's
  own C threads, so the Python side only decodes and infers.

:data:`TRANSPORTS` is the registry (client name -> module and class), imported lazily so
an agent on one client never imports the other library.
"""

from __future__ import annotations

import importlib

from edge_agent.transport.base import (
    CLIENTS,
    PERMANENT_CODES,
    Client,
    Consumer,
    ConsumerOptions,
    FlushReport,
    Producer,
    RebalanceCallback,
    Record,
    Transport,
    TransportError,
)
from stream.settings import KafkaSettings

__all__ = [
    "CLIENTS",
    "PERMANENT_CODES",
    "TRANSPORTS",
    "Client",
    "Consumer",
    "ConsumerOptions",
    "FlushReport",
    "Producer",
    "RebalanceCallback",
    "Record",
    "Transport",
    "TransportError",
    "make_transport",
]

#: client name -> (module, class) of its transport.
TRANSPORTS: dict[Client, tuple[str, str]] = {
    "kafka-python": ("edge_agent.transport.kafka_python", "KafkaPythonTransport"),
    "confluent": ("edge_agent.transport.confluent", "ConfluentTransport"),
}


def make_transport(client: str, settings: KafkaSettings) -> Transport:
    """The transport for ``client`` (one of :data:`CLIENTS`)."""
    entry = TRANSPORTS.get(client)  # type: ignore[call-overload]
    if entry is None:
        msg = f"unknown Kafka client {client!r}; choose one of {', '.join(CLIENTS)}"
        raise ValueError(msg)
    module, cls = entry
    transport: Transport = getattr(importlib.import_module(module), cls)(settings)
    return transport
