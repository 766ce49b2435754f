"""The agent's Kafka transport choice: config, the librdkafka mapping, clear refusals.

The transports themselves run against the real broker in tests/integration (every agent
integration test that takes ``client`` runs on both libraries).
"""

from __future__ import annotations

import builtins
import sys
from typing import Any

import kafka
import pytest

from edge_agent.config import agent_config
from edge_agent.exceptions import AgentConfigError
from edge_agent.transport import (
    CLIENTS,
    ConsumerOptions,
    client_version,
    make_transport,
    resolve_client,
)
from edge_agent.transport.kafka_python import KafkaPythonTransport
from stream.exceptions import ConfigError
from stream.settings import KafkaSettings


def test_client_defaults_to_auto_and_comes_from_flag_env_or_file() -> None:
    assert agent_config(flags={"bundle": "/b"}, environ={}).client == "auto"
    env = {"EDGE_CLIENT": "confluent"}
    assert agent_config(flags={"bundle": "/b"}, environ=env).client == "confluent"
    file = {"agent": {"client": "confluent"}}
    assert agent_config(flags={"bundle": "/b"}, config=file, environ={}).client == "confluent"
    flags = {"bundle": "/b", "client": "kafka-python"}
    assert agent_config(flags=flags, environ=env).client == "kafka-python"


def test_unknown_client_is_refused_naming_the_choices() -> None:
    with pytest.raises(AgentConfigError, match=r"kafka-python, confluent.*--client"):
        agent_config(flags={"bundle": "/b", "client": "rdkafka"}, environ={})
    with pytest.raises(ValueError, match="kafka-python, confluent"):
        make_transport("rdkafka", KafkaSettings())


def test_auto_is_confluent_when_it_imports_else_kafka_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("confluent_kafka")
    assert resolve_client("auto") == "confluent"
    assert client_version("confluent").count("/") == 1  # confluent-kafka/librdkafka
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # as if not installed
    assert resolve_client("auto") == "kafka-python"
    assert isinstance(make_transport("auto", KafkaSettings()), KafkaPythonTransport)
    assert client_version("confluent") == "unknown"
    assert client_version("kafka-python") == kafka.__version__
    for name in CLIENTS:
        assert resolve_client(name) == name
    with pytest.raises(ValueError, match="auto, kafka-python, confluent"):
        resolve_client("librdkafka")


def test_make_transport_picks_the_library() -> None:
    assert isinstance(make_transport("kafka-python", KafkaSettings()), KafkaPythonTransport)
    assert set(CLIENTS) == {"kafka-python", "confluent"}


def test_confluent_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_confluent(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "confluent_kafka" or name.startswith("confluent_kafka."):
            raise ImportError("No module named 'confluent_kafka'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_confluent)
    with pytest.raises(ConfigError, match=r"edgeinfer\[agent\].*--client kafka-python"):
        make_transport("confluent", KafkaSettings())


def test_librdkafka_config_maps_plaintext() -> None:
    cfg = KafkaSettings(bootstrap_servers="a:1, b:2", client_id="dev").librdkafka_config()
    assert cfg == {
        "bootstrap.servers": "a:1,b:2",
        "client.id": "dev",
        "security.protocol": "plaintext",
        "socket.timeout.ms": 30000,
    }


def test_librdkafka_config_maps_tls_and_sasl(tmp_path: Any) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    s = KafkaSettings(
        security_protocol="SASL_SSL",
        ssl_cafile=str(ca),
        ssl_check_hostname=False,
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="u",
        sasl_password="p",  # noqa: S106 (a test value)
    )
    cfg = s.librdkafka_config(**{"group.id": "g"})
    assert cfg["security.protocol"] == "sasl_ssl"
    assert cfg["ssl.ca.location"] == str(ca)
    assert cfg["ssl.endpoint.identification.algorithm"] == "none"
    assert (cfg["sasl.mechanisms"], cfg["sasl.username"], cfg["sasl.password"]) == (
        "SCRAM-SHA-512",
        "u",
        "p",
    )
    assert cfg["group.id"] == "g"
    assert "ssl.certificate.location" not in cfg


def test_a_configuration_librdkafka_refuses_is_a_config_error_not_an_outage(
    tmp_path: Any,
) -> None:
    """librdkafka checks its settings when a client is made: retrying cannot fix them."""
    pytest.importorskip("confluent_kafka")
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    settings = KafkaSettings(security_protocol="SSL", ssl_cafile=str(bad))
    transport = make_transport("confluent", settings)
    with pytest.raises(ConfigError, match=r"librdkafka refused the producer.*ssl\.ca\.location"):
        transport.producer(
            client_id="t", max_block_ms=100, delivery_timeout_ms=1000, max_bytes=1 << 20
        )
    with pytest.raises(ConfigError, match="librdkafka refused the consumer"):
        options = ConsumerOptions("g", "t", 10, 50, 1000, 300000)
        transport.consumer("t", options, on_assigned=print, on_revoked=print)


@pytest.mark.parametrize(
    ("name", "code", "permanent"),
    [
        ("MSG_SIZE_TOO_LARGE", "MESSAGE_TOO_LARGE", True),  # librdkafka
        ("MESSAGE_SIZE_TOO_LARGE", "MESSAGE_TOO_LARGE", True),  # kafka-python
        ("_UNKNOWN_TOPIC", "UNKNOWN_TOPIC_OR_PARTITION", True),  # librdkafka, local
        ("UNKNOWN_TOPIC_OR_PART", "UNKNOWN_TOPIC_OR_PARTITION", True),
        ("TOPIC_AUTHORIZATION_FAILED", "TOPIC_AUTHORIZATION_FAILED", True),
        ("_MSG_TIMED_OUT", "MSG_TIMED_OUT", False),  # an outage: replayed
        ("", "", False),
    ],
)
def test_client_error_names_map_to_one_protocol_code(name: str, code: str, permanent: bool) -> None:
    from edge_agent.transport import TransportError

    err = TransportError("x", code=name)
    assert (err.code, err.permanent) == (code, permanent)


def test_kafka_python_errors_keep_their_code() -> None:
    from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

    from edge_agent.transport.kafka_python import _error

    too_large = _error("send", MessageSizeTooLargeError("the message is 5000 bytes"), failed=(7,))
    assert (too_large.code, too_large.permanent, too_large.failed) == (
        "MESSAGE_TOO_LARGE",
        True,
        (7,),
    )
    assert "send: MessageSizeTooLargeError" in str(too_large)
    assert not _error("send", KafkaTimeoutError("metadata")).permanent
