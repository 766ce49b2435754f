"""Kafka client settings: one frozen object, read from flags, a config file and ``EDGE_*``.

Precedence: command-line flag > ``EDGE_*`` environment variable > config file (TOML, the
``[kafka]`` table) > default. Every KafkaProducer/KafkaConsumer/KafkaAdminClient config in
the project is built here, TLS and SASL included.

Why one module of this size: the one place client settings are built, for both clients
(kafka-python and librdkafka) from one table of values, as issue 13 asks.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, get_args

from stream.env import edge_environment, env_name
from stream.exceptions import ConfigError

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
OffsetReset = Literal["earliest", "latest"]

DEFAULT_BOOTSTRAP = "localhost:9092"


#: The durable producer defaults, one table for both client libraries:
#: (kafka-python name, librdkafka name, value); an empty name = not a setting there.
PRODUCER_DEFAULTS: tuple[tuple[str, str, Any], ...] = (
    ("acks", "acks", "all"),
    ("enable_idempotence", "enable.idempotence", True),
    ("compression_type", "compression.type", "lz4"),
    ("linger_ms", "linger.ms", 5),
    ("max_request_size", "message.max.bytes", 16 * 1024 * 1024),
    ("retries", "", 5),
)


#: Security settings: field -> (kafka-python name, librdkafka name). The key files are
#: passed when set and the protocol uses TLS; the SASL ones whenever the protocol is SASL.
_SECURITY_NAMES: dict[str, tuple[str, str]] = {
    "ssl_cafile": ("ssl_cafile", "ssl.ca.location"),
    "ssl_certfile": ("ssl_certfile", "ssl.certificate.location"),
    "ssl_keyfile": ("ssl_keyfile", "ssl.key.location"),
    "sasl_mechanism": ("sasl_mechanism", "sasl.mechanisms"),
    "sasl_username": ("sasl_plain_username", "sasl.username"),
    "sasl_password": ("sasl_plain_password", "sasl.password"),
}


@dataclass(frozen=True, kw_only=True)
class KafkaSettings:
    """Validated, immutable Kafka connection settings. ``repr`` masks the password."""

    bootstrap_servers: str = DEFAULT_BOOTSTRAP
    client_id: str = "edgeinfer"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    #: Low values make consumer groups form fast (kafka-python joins in ~timeout/2).
    session_timeout_ms: int = 6000
    request_timeout_ms: int = 30000

    def __post_init__(self) -> None:
        _validate(self)

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "sasl_password" and value is not None:
                value = "***"
            parts.append(f"{f.name}={value!r}")
        return f"KafkaSettings({', '.join(parts)})"

    __str__ = __repr__

    @property
    def bootstrap_list(self) -> list[str]:
        return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]

    # ------------------------------------------------------------- client configs

    def common_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_list,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            cfg["ssl_check_hostname"] = self.ssl_check_hostname
        cfg.update(self._security(librdkafka=False))
        return cfg

    def _security(self, *, librdkafka: bool) -> dict[str, Any]:
        """Key files (when set) and SASL credentials under one client's names."""
        ssl = self.security_protocol in ("SSL", "SASL_SSL")
        sasl = self.security_protocol.startswith("SASL")
        return {
            names[librdkafka]: getattr(self, attr)
            for attr, names in _SECURITY_NAMES.items()
            if (sasl if attr.startswith("sasl") else ssl and getattr(self, attr))
        }

    @property
    def heartbeat_interval_ms(self) -> int:
        """A third of the session timeout (Kafka's rule of thumb), at least 100 ms."""
        return max(self.session_timeout_ms // 3, 100)

    def producer_config(self, **overrides: Any) -> dict[str, Any]:
        """Durable producer defaults (:data:`PRODUCER_DEFAULTS`) for kafka-python."""
        cfg = self.common_config()
        cfg.update({kp: value for kp, _rd, value in PRODUCER_DEFAULTS if kp})
        cfg.update(overrides)
        return cfg

    def consumer_config(
        self,
        *,
        group_id: str | None,
        auto_offset_reset: OffsetReset = "earliest",
        **overrides: Any,
    ) -> dict[str, Any]:
        """Consumer with manual commits (the caller commits after its output is acked)."""
        cfg = self.common_config()
        cfg.update(
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            max_partition_fetch_bytes=16 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
        )
        cfg.update(overrides)
        return cfg

    def admin_config(self, **overrides: Any) -> dict[str, Any]:
        cfg = self.common_config()
        cfg.update(overrides)
        return cfg

    def librdkafka_config(self, **overrides: Any) -> dict[str, Any]:
        """The same connection for librdkafka (confluent-kafka): dotted property names."""
        cfg: dict[str, Any] = {
            "bootstrap.servers": ",".join(self.bootstrap_list),
            "client.id": self.client_id,
            "security.protocol": self.security_protocol.lower(),
            "socket.timeout.ms": self.request_timeout_ms,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            cfg["ssl.endpoint.identification.algorithm"] = (
                "https" if self.ssl_check_hostname else "none"
            )
        cfg.update(self._security(librdkafka=True))
        cfg.update(overrides)
        return cfg

    def librdkafka_producer_config(self, **overrides: Any) -> dict[str, Any]:
        """Durable producer defaults (:data:`PRODUCER_DEFAULTS`) for librdkafka."""
        cfg = self.librdkafka_config()
        cfg.update({rd: value for _kp, rd, value in PRODUCER_DEFAULTS if rd})
        cfg.update(overrides)
        return cfg

    def librdkafka_consumer_config(self, *, group_id: str, **overrides: Any) -> dict[str, Any]:
        """Consumer with manual commits and explicit offset storage, for librdkafka."""
        cfg = self.librdkafka_config()
        cfg.update(
            {
                "group.id": group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": self.session_timeout_ms,
                "heartbeat.interval.ms": self.heartbeat_interval_ms,
            }
        )
        cfg.update(overrides)
        return cfg


def _validate(s: KafkaSettings) -> None:
    if not s.bootstrap_list:
        msg = (
            "bootstrap_servers is empty: pass --bootstrap-servers host:port "
            f"or set {env_name('bootstrap_servers')}"
        )
        raise ConfigError(msg)
    for server in s.bootstrap_list:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            msg = (
                f"bootstrap_servers entry {server!r} is not host:port (e.g. localhost:9092); "
                f"fix --bootstrap-servers or {env_name('bootstrap_servers')}"
            )
            raise ConfigError(msg)
    if s.security_protocol not in get_args(SecurityProtocol):
        msg = (
            f"security_protocol {s.security_protocol!r} is not one of "
            f"{', '.join(get_args(SecurityProtocol))}; fix --security-protocol or "
            f"{env_name('security_protocol')}"
        )
        raise ConfigError(msg)
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        value = getattr(s, name)
        if value and not Path(value).is_file():
            msg = f"{name} {value!r} does not exist; fix --{name.replace('_', '-')}"
            raise ConfigError(msg)
    if bool(s.ssl_certfile) != bool(s.ssl_keyfile):
        msg = "ssl_certfile and ssl_keyfile go together for client certificates: set both"
        raise ConfigError(msg)
    if s.security_protocol.startswith("SASL"):
        if s.sasl_mechanism not in get_args(SaslMechanism):
            msg = (
                f"security_protocol {s.security_protocol} needs sasl_mechanism, one of "
                f"{', '.join(get_args(SaslMechanism))}; got {s.sasl_mechanism!r}"
            )
            raise ConfigError(msg)
        if not s.sasl_username or not s.sasl_password:
            msg = (
                f"security_protocol {s.security_protocol} needs sasl_username and "
                f"sasl_password (or {env_name('sasl_username')}/{env_name('sasl_password')})"
            )
            raise ConfigError(msg)
    if s.session_timeout_ms < 1000:
        msg = f"session_timeout_ms must be >= 1000, got {s.session_timeout_ms}"
        raise ConfigError(msg)
    # kafka-python's consumer refuses anything outside fetch_max_wait_ms (500) <
    # request_timeout_ms < connections_max_idle_ms (540000) at construction.
    if not 1000 <= s.request_timeout_ms < 540_000:
        msg = (
            f"request_timeout_ms must be in [1000, 540000), got {s.request_timeout_ms}; "
            f"fix {env_name('request_timeout_ms')} or the config file"
        )
        raise ConfigError(msg)


_FIELD_NAMES = tuple(f.name for f in fields(KafkaSettings))
_INT_FIELDS = {"session_timeout_ms", "request_timeout_ms"}
_BOOL_FIELDS = {"ssl_check_hostname"}


def _coerce(name: str, value: Any, source: str) -> Any:
    if name in _INT_FIELDS:
        try:
            if isinstance(value, bool | float):
                raise TypeError(name)
            return int(value)
        except (TypeError, ValueError):
            msg = f"{name} from {source} must be an integer, got {value!r}"
            raise ConfigError(msg) from None
    if name in _BOOL_FIELDS:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        msg = f"{name} from {source} must be true or false, got {value!r}"
        raise ConfigError(msg)
    if isinstance(value, os.PathLike) and name.startswith("ssl_"):
        value = os.fspath(value)
    if not isinstance(value, str):
        msg = f"{name} from {source} must be a string, got {value!r}"
        raise ConfigError(msg)
    if name in ("security_protocol", "sasl_mechanism"):
        return value.upper()
    return value


def load_config_file(path: Path | str | None) -> dict[str, Any]:
    """Read a TOML config file. Returns ``{}`` when ``path`` is None."""
    if path is None:
        return {}
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        msg = f"config file {p} does not exist; fix --config or {env_name('config')}"
        raise ConfigError(msg) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        msg = f"config file {p} is not valid TOML: {exc}"
        raise ConfigError(msg) from exc
    return data


def kafka_settings(
    *,
    flags: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> KafkaSettings:
    """Merge the sources (flag > env > config file ``[kafka]`` > default) and validate."""
    values = merge_sources(
        names=_FIELD_NAMES,
        table="kafka",
        coerce=_coerce,
        flags=flags,
        config=config,
        environ=environ,
    )
    return KafkaSettings(**values)


def merge_sources(
    *,
    names: Sequence[str],
    table: str,
    coerce: Callable[[str, Any, str], Any],
    flags: Mapping[str, Any] | None,
    config: Mapping[str, Any] | None,
    environ: Mapping[str, str] | None,
    error: type[ConfigError] = ConfigError,
) -> dict[str, Any]:
    """The project's one precedence rule: flag > ``EDGE_*`` > config file ``[table]``.

    Returns the settings that were given (defaults stay with the dataclass); ``coerce``
    turns ``(name, raw value, where it came from)`` into the typed value. Unknown keys in
    the config file's table are an ``error`` naming them and the known ones.
    """
    env = edge_environment(environ)
    entries = (config or {}).get(table, {})
    if not isinstance(entries, Mapping):
        msg = f"the config file's {table!r} entry must be a table ([{table}]), got {entries!r}"
        raise error(msg)
    unknown = set(entries) - set(names)
    if unknown:
        msg = (
            f"unknown setting(s) {sorted(unknown)} in the config file's [{table}] table; "
            f"known: {', '.join(names)}"
        )
        raise error(msg)
    values: dict[str, Any] = {}
    for name in names:
        if flags and flags.get(name) is not None:
            values[name] = coerce(name, flags[name], f"--{name.replace('_', '-')}")
        elif name in env:
            values[name] = coerce(name, env[name], env_name(name))
        elif name in entries:
            values[name] = coerce(name, entries[name], f"the config file's [{table}] table")
    return values


def add_kafka_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the Kafka connection flags; help shows the variable each falls back to."""
    g = parser.add_argument_group("Kafka connection")
    g.add_argument(
        "--bootstrap-servers",
        help=f"comma-separated host:port list (default {DEFAULT_BOOTSTRAP}) "
        f"[env: {env_name('bootstrap_servers')}]",
    )
    g.add_argument("--client-id", help=f"client id [env: {env_name('client_id')}]")
    g.add_argument(
        "--security-protocol",
        choices=get_args(SecurityProtocol),
        type=str.upper,
        help=f"PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL "
        f"[env: {env_name('security_protocol')}]",
    )
    g.add_argument("--ssl-cafile", help=f"CA bundle (PEM) [env: {env_name('ssl_cafile')}]")
    g.add_argument("--ssl-certfile", help=f"client cert (PEM) [env: {env_name('ssl_certfile')}]")
    g.add_argument("--ssl-keyfile", help=f"client key (PEM) [env: {env_name('ssl_keyfile')}]")
    g.add_argument(
        "--sasl-mechanism",
        type=str.upper,
        help=f"PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 [env: {env_name('sasl_mechanism')}]",
    )
    g.add_argument("--sasl-username", help=f"[env: {env_name('sasl_username')}]")
    g.add_argument(
        "--sasl-password",
        help=f"prefer the variable: flags show up in `ps` [env: {env_name('sasl_password')}]",
    )
    g.add_argument(
        "--config",
        help="TOML config file; its [kafka] table holds these settings "
        f"[env: {env_name('config')}]",
    )


def settings_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> KafkaSettings:
    """Build settings from parsed flags (see :func:`add_kafka_arguments`)."""
    env = edge_environment(environ)
    config_path = getattr(args, "config", None) or env.get("config")
    config = load_config_file(config_path)
    flags = {name: getattr(args, name, None) for name in _FIELD_NAMES}
    return kafka_settings(flags=flags, config=config, environ=environ)


def with_overrides(settings: KafkaSettings, **changes: Any) -> KafkaSettings:
    return replace(settings, **changes)
