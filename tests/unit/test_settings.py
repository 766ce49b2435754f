"""Kafka settings: precedence, masking, validation messages, client configs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from stream.exceptions import ConfigError
from stream.settings import (
    DEFAULT_BOOTSTRAP,
    KafkaSettings,
    add_kafka_arguments,
    kafka_settings,
    load_config_file,
    settings_from_args,
    with_overrides,
)

SECRET = "s3cr3t-pa55"  # noqa: S105 (a test value)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_kafka_arguments(parser)
    return parser.parse_args(argv)


def test_defaults() -> None:
    s = kafka_settings(environ={})
    assert s == KafkaSettings()
    assert s.bootstrap_servers == DEFAULT_BOOTSTRAP
    assert s.security_protocol == "PLAINTEXT"
    assert s.session_timeout_ms == 6000


def test_precedence_flag_over_env_over_file_over_default() -> None:
    config = {"kafka": {"bootstrap_servers": "file:1", "client_id": "from-file"}}
    environ = {"EDGE_BOOTSTRAP_SERVERS": "env:2", "EDGE_CLIENT_ID": "from-env"}
    flags = {"bootstrap_servers": "flag:3", "client_id": None}

    assert kafka_settings(config=config, environ={}).bootstrap_servers == "file:1"
    assert kafka_settings(config=config, environ=environ).bootstrap_servers == "env:2"
    both = kafka_settings(flags=flags, config=config, environ=environ)
    assert both.bootstrap_servers == "flag:3"
    # A flag left unset (None) falls through to the environment.
    assert both.client_id == "from-env"
    # Untouched settings keep their default.
    assert both.request_timeout_ms == 30000


def test_empty_environment_variable_is_ignored() -> None:
    s = kafka_settings(config={"kafka": {"client_id": "file"}}, environ={"EDGE_CLIENT_ID": ""})
    assert s.client_id == "file"


def test_settings_from_args_reads_flags_env_and_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        '[kafka]\nbootstrap_servers = "file:9092"\nclient_id = "file-client"\n'
        "session_timeout_ms = 7000\n"
    )
    args = parse(["--config", str(cfg), "--client-id", "flag-client"])
    s = settings_from_args(args, environ={"EDGE_SESSION_TIMEOUT_MS": "8000"})
    assert (s.bootstrap_servers, s.client_id, s.session_timeout_ms) == (
        "file:9092",
        "flag-client",
        8000,
    )
    # The config file path itself may come from EDGE_CONFIG.
    s2 = settings_from_args(parse([]), environ={"EDGE_CONFIG": str(cfg)})
    assert s2.client_id == "file-client"


def test_flags_upper_case_the_protocol_and_help_names_the_variable() -> None:
    parser = argparse.ArgumentParser()
    add_kafka_arguments(parser)
    assert "EDGE_BOOTSTRAP_SERVERS" in parser.format_help()
    args = parser.parse_args(
        [
            "--security-protocol",
            "sasl_plaintext",
            "--sasl-mechanism",
            "scram-sha-256",
            "--sasl-username",
            "u",
        ]
    )
    s = settings_from_args(args, environ={"EDGE_SASL_PASSWORD": SECRET})
    assert (s.security_protocol, s.sasl_mechanism) == ("SASL_PLAINTEXT", "SCRAM-SHA-256")


def sasl(**changes: Any) -> KafkaSettings:
    base: dict[str, Any] = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_username": "alice",
        "sasl_password": SECRET,
    }
    base.update(changes)
    return KafkaSettings(**base)


def test_password_is_masked_in_repr_and_str() -> None:
    s = sasl()
    for text in (repr(s), str(s), f"{s}", repr([s])):
        assert SECRET not in text
        assert "sasl_password='***'" in text or "sasl_password=***" in text
    assert "sasl_username='alice'" in repr(s)
    assert "sasl_password=None" in repr(KafkaSettings())
    # The client configs still carry the real password.
    assert s.producer_config()["sasl_plain_password"] == SECRET


def test_client_configs() -> None:
    s = KafkaSettings(bootstrap_servers="a:1, b:2", client_id="c")
    assert s.bootstrap_list == ["a:1", "b:2"]
    prod = s.producer_config(linger_ms=0)
    assert prod["acks"] == "all" and prod["enable_idempotence"] is True
    assert prod["linger_ms"] == 0
    assert "sasl_mechanism" not in prod and "ssl_cafile" not in prod
    cons = s.consumer_config(group_id="g", auto_offset_reset="latest")
    assert cons["group_id"] == "g" and cons["enable_auto_commit"] is False
    assert cons["auto_offset_reset"] == "latest"
    assert cons["heartbeat_interval_ms"] == 2000
    assert s.admin_config()["bootstrap_servers"] == ["a:1", "b:2"]


def test_tls_and_sasl_configs(tmp_path: Path) -> None:
    paths = {}
    for name in ("ca", "cert", "key"):
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_text("-----BEGIN-----\n")
    s = sasl(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        ssl_cafile=str(paths["ca"]),
        ssl_certfile=str(paths["cert"]),
        ssl_keyfile=str(paths["key"]),
        ssl_check_hostname=False,
    )
    cfg = s.common_config()
    assert cfg["security_protocol"] == "SASL_SSL"
    assert cfg["ssl_cafile"] == str(paths["ca"])
    assert cfg["ssl_check_hostname"] is False
    assert (cfg["sasl_mechanism"], cfg["sasl_plain_username"]) == ("SCRAM-SHA-512", "alice")
    # Path objects are accepted for the file settings.
    from_flags = kafka_settings(
        flags={"security_protocol": "SSL", "ssl_cafile": paths["ca"]}, environ={}
    )
    assert from_flags.ssl_cafile == str(paths["ca"])


def test_env_booleans_and_ints_are_coerced() -> None:
    s = kafka_settings(
        environ={
            "EDGE_SSL_CHECK_HOSTNAME": "no",
            "EDGE_REQUEST_TIMEOUT_MS": "15000",
            "EDGE_SECURITY_PROTOCOL": "ssl",
        }
    )
    assert s.ssl_check_hostname is False
    assert s.request_timeout_ms == 15000
    assert s.security_protocol == "SSL"


def test_with_overrides_revalidates() -> None:
    s = with_overrides(KafkaSettings(), client_id="x")
    assert s.client_id == "x"
    with pytest.raises(ConfigError, match="session_timeout_ms"):
        with_overrides(s, session_timeout_ms=5)


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"flags": {"bootstrap_servers": " , "}}, ["bootstrap_servers", "EDGE_BOOTSTRAP_SERVERS"]),
        ({"flags": {"bootstrap_servers": "localhost"}}, ["'localhost'", "host:port"]),
        ({"flags": {"bootstrap_servers": "h:0"}}, ["'h:0'", "--bootstrap-servers"]),
        ({"flags": {"bootstrap_servers": "h:65536"}}, ["'h:65536'"]),
        ({"flags": {"bootstrap_servers": ":9092"}}, ["':9092'"]),
        ({"flags": {"security_protocol": "TLS"}}, ["security_protocol", "'TLS'", "SASL_SSL"]),
        ({"flags": {"ssl_cafile": "/nonexistent/ca.pem"}}, ["ssl_cafile", "--ssl-cafile"]),
        ({"flags": {"security_protocol": "SASL_SSL"}}, ["sasl_mechanism", "SCRAM-SHA-256"]),
        (
            {"flags": {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"}},
            ["sasl_username", "EDGE_SASL_PASSWORD"],
        ),
        ({"environ": {"EDGE_SESSION_TIMEOUT_MS": "abc"}}, ["session_timeout_ms", "EDGE_SES"]),
        ({"environ": {"EDGE_SESSION_TIMEOUT_MS": "999"}}, ["session_timeout_ms", ">= 1000"]),
        ({"environ": {"EDGE_REQUEST_TIMEOUT_MS": "100"}}, ["request_timeout_ms", "540000"]),
        ({"environ": {"EDGE_SSL_CHECK_HOSTNAME": "maybe"}}, ["ssl_check_hostname", "'maybe'"]),
        ({"config": {"kafka": {"bootstrap": "x:1"}}}, ["unknown setting", "'bootstrap'"]),
        ({"config": {"kafka": {"bootstrap_servers": 9092}}}, ["bootstrap_servers", "string"]),
        ({"config": {"kafka": {"client_id": 5}}}, ["client_id", "config file"]),
        ({"config": {"kafka": {"session_timeout_ms": True}}}, ["session_timeout_ms", "integer"]),
        ({"config": {"kafka": {"session_timeout_ms": 7000.5}}}, ["session_timeout_ms"]),
        ({"config": {"kafka": "localhost:9092"}}, ["[kafka]"]),
    ],
)
def test_bad_values_raise_config_error_naming_the_setting(
    kwargs: dict[str, Any], names: list[str]
) -> None:
    kwargs.setdefault("environ", {})
    with pytest.raises(ConfigError) as info:
        kafka_settings(**kwargs)
    for name in names:
        assert name in str(info.value), str(info.value)


def test_client_certificate_needs_both_files(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="ssl_certfile and ssl_keyfile"):
        KafkaSettings(security_protocol="SSL", ssl_certfile=str(cert))


def test_config_file_errors(tmp_path: Path) -> None:
    assert load_config_file(None) == {}
    with pytest.raises(ConfigError, match="does not exist.*EDGE_CONFIG"):
        load_config_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config_file(bad)


def test_settings_are_frozen() -> None:
    s = KafkaSettings()
    with pytest.raises(AttributeError):
        s.client_id = "x"  # type: ignore[misc]
