"""AgentConfig: precedence flag > EDGE_* > [agent] table > default, validation, masking."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from edge_agent.commands import register
from edge_agent.config import AgentConfig, agent_config, config_from_args
from edge_agent.exceptions import AgentConfigError
from stream.exceptions import ConfigError
from stream.settings import KafkaSettings


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    register(sub)
    return parser.parse_args(["agent", *argv])


def test_defaults() -> None:
    c = agent_config(flags={"bundle": "/b"}, environ={})
    assert c.bundle == Path("/b")
    assert c.output_topic == "inference.results"
    assert c.deadletter_topic == "inference.deadletter"
    assert c.metrics_port == 9400
    assert (c.max_batch, c.max_latency_ms, c.threads) == (32, 0.0, 1)
    assert c.max_devices == 10_000
    assert c.model_poll_s == 2.0
    assert c.input_for_task("image-classification") == "images"
    assert c.input_for_task("sequence-classification") == "sensors"
    assert c.group_for("digits") == "edgeinfer-digits"
    assert "-" in c.agent_id  # hostname-pid


def test_precedence_flag_over_env_over_file_over_default() -> None:
    file = {"agent": {"max_batch": 8, "max_latency_ms": 2, "group": "from-file", "threads": 3}}
    env = {"EDGE_MAX_BATCH": "16", "EDGE_GROUP": "from-env", "EDGE_BUNDLE": "/env/b"}
    c = agent_config(flags={"max_batch": 64}, config=file, environ=env)
    assert c.max_batch == 64  # flag
    assert c.group == "from-env"  # env over file
    assert c.max_latency_ms == 2.0  # file
    assert c.threads == 3  # file
    assert c.bundle == Path("/env/b")
    assert c.max_devices == 10_000  # default


def test_kafka_settings_come_from_the_same_sources() -> None:
    c = agent_config(
        flags={"bundle": "/b"},
        config={"kafka": {"bootstrap_servers": "file:1"}},
        environ={"EDGE_BOOTSTRAP_SERVERS": "env:2"},
    )
    assert c.kafka.bootstrap_servers == "env:2"


def test_cli_flags_map_to_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[agent]\nmax_devices = 5\n[kafka]\nbootstrap_servers = "h:1"\n')
    args = parse(
        [
            "--registry",
            str(tmp_path),
            "--model",
            "digits",
            "--input",
            "cams",
            "--output",
            "out",
            "--deadletter",
            "dl",
            "--metrics-port",
            "0",
            "--max-batch",
            "4",
            "--max-latency-ms",
            "1.5",
            "--config",
            str(cfg),
        ]
    )
    c = config_from_args(args, environ={})
    assert (c.input_topic, c.output_topic, c.deadletter_topic) == ("cams", "out", "dl")
    assert c.registry == tmp_path and c.model == "digits"
    assert (c.metrics_port, c.max_batch, c.max_latency_ms) == (0, 4, 1.5)
    assert c.max_devices == 5
    assert c.kafka.bootstrap_servers == "h:1"


def test_every_flag_names_its_variable() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    register(sub)
    agent = sub.choices["agent"]
    for action in agent._actions:
        if action.option_strings and action.dest not in ("help",):
            assert "[env: EDGE_" in (action.help or ""), action.option_strings


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        ({}, "exactly one model source"),
        ({"bundle": "/b", "registry": "/r", "model": "m"}, "exactly one model source"),
        ({"registry": "/r"}, "--registry needs --model"),
        ({"models_topic": "models"}, "--models-topic needs --model"),
        ({"bundle": "/b", "max_batch": 0}, "max_batch must be >= 1.*--max-batch.*EDGE_MAX_BATCH"),
        ({"bundle": "/b", "max_latency_ms": -1}, "max_latency_ms must be >= 0"),
        ({"bundle": "/b", "metrics_port": 70000}, "metrics_port must be 0..65535"),
        ({"bundle": "/b", "max_poll_interval_ms": 10}, "max_poll_interval_ms"),
        ({"bundle": "/b", "input_topic": "x", "output_topic": "x"}, "would loop"),
        ({"bundle": "/b", "group": " "}, "group is empty"),
    ],
)
def test_invalid_settings_name_the_fix(flags: dict[str, object], match: str) -> None:
    with pytest.raises(AgentConfigError, match=match):
        agent_config(flags=flags, environ={})


def test_wrong_type_from_env_names_the_variable() -> None:
    with pytest.raises(AgentConfigError, match="max_batch from EDGE_MAX_BATCH"):
        agent_config(flags={"bundle": "/b"}, environ={"EDGE_MAX_BATCH": "lots"})


def test_unknown_setting_in_file_is_refused() -> None:
    with pytest.raises(AgentConfigError, match=r"unknown setting\(s\) \['batchsize'\]"):
        agent_config(flags={"bundle": "/b"}, config={"agent": {"batchsize": 3}}, environ={})


def test_errors_are_config_errors() -> None:
    assert issubclass(AgentConfigError, ConfigError)


def test_frozen_and_secrets_masked() -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="u",
        sasl_password="hunter2",  # noqa: S106 (a test secret)
    )
    c = AgentConfig(bundle=Path("/b"), kafka=kafka)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.max_batch = 3  # type: ignore[misc]
    assert "hunter2" not in repr(c)
    assert "hunter2" not in str(c.describe())
    assert "***" in str(c.describe())


def test_model_supply_settings_from_flags_env_and_file() -> None:
    c = agent_config(flags={"bundle": "/b"}, environ={})
    assert (c.allow_unsigned, c.trust_registry_pin, c.min_version) == (False, False, None)
    assert c.max_model_bytes == 256 * 1024 * 1024
    env = {"EDGE_ALLOW_UNSIGNED": "yes", "EDGE_TRUST_REGISTRY_PIN": "0", "EDGE_MIN_VERSION": "7"}
    c = agent_config(flags={"bundle": "/b"}, environ=env)
    assert (c.allow_unsigned, c.trust_registry_pin, c.min_version) == (True, False, "7")
    file = {"agent": {"allow_unsigned": True, "max_model_bytes": 1000}}
    c = agent_config(flags={"bundle": "/b"}, config=file, environ={})
    assert c.allow_unsigned and c.max_model_bytes == 1000
    args = parse(["--bundle", "/b", "--allow-unsigned", "--trust-registry-pin", "--pin", "9"])
    c = config_from_args(args, environ={})
    assert c.allow_unsigned and c.trust_registry_pin and c.pin == "9"
    assert not config_from_args(parse(["--bundle", "/b"]), environ={}).allow_unsigned


def test_the_stall_limit_defaults_to_the_poll_interval_plus_flush_and_commit() -> None:
    assert agent_config(flags={"bundle": "/b"}, environ={}).stall_limit_s() == 330.0
    c = agent_config(flags={"bundle": "/b", "max_poll_interval_ms": 60_000}, environ={})
    assert c.stall_limit_s() == 90.0
    assert (
        agent_config(flags={"bundle": "/b", "stall_timeout_s": 5}, environ={}).stall_limit_s() == 5
    )


@pytest.mark.parametrize(
    ("flags", "environ", "match"),
    [
        ({"allow_unsigned": "maybe"}, {}, "allow_unsigned from --allow-unsigned has the wrong"),
        ({}, {"EDGE_ALLOW_UNSIGNED": "sure"}, "allow_unsigned from EDGE_ALLOW_UNSIGNED"),
        ({"min_version": "../1"}, {}, "min_version '../1' is not a version.*EDGE_MIN_VERSION"),
        ({"pin": "copy of 1"}, {}, "pin 'copy of 1' is not a version.*--pin or EDGE_PIN"),
        ({"pin": "3", "min_version": "10"}, {}, "pin 3 is below min_version 10: .*lower"),
        ({"stall_timeout_s": 0}, {}, "stall_timeout_s must be > 0.*--stall-timeout-s"),
        ({"max_model_bytes": 0}, {}, "max_model_bytes must be >= 1.*--max-model-bytes"),
    ],
)
def test_model_supply_settings_name_the_fix(
    flags: dict[str, object], environ: dict[str, str], match: str
) -> None:
    with pytest.raises(AgentConfigError, match=match):
        agent_config(flags={"bundle": "/b", **flags}, environ=environ)


def test_monitoring_and_sample_capture_settings() -> None:
    c = agent_config(flags={"bundle": "/b"}, environ={})
    assert (c.monitor, c.monitor_window, c.low_confidence, c.drift_threshold) == (
        True,
        1000,
        0.5,
        0.1,
    )
    assert (c.samples_topic, c.samples_per_s, c.samples_burst) == ("samples", 0.2, 10)
    assert (c.samples_device_per_min, c.samples_random_share) == (2.0, 0.1)
    args = parse(["--bundle", "/b", "--no-monitor", "--samples-per-s", "3", "--samples-burst", "7"])
    c = config_from_args(
        args, environ={"EDGE_SAMPLES_TOPIC": "picked", "EDGE_LOW_CONFIDENCE": "0.3"}
    )
    assert not c.monitor and c.samples_per_s == 3.0 and c.samples_burst == 7
    assert c.samples_topic == "picked" and c.low_confidence == 0.3
    assert not agent_config(flags={"bundle": "/b"}, environ={"EDGE_MONITOR": "0"}).monitor


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (
            {"monitor_window": 0},
            "monitor_window must be >= 1.*--monitor-window.*EDGE_MONITOR_WINDOW",
        ),
        ({"low_confidence": 1.5}, "low_confidence must be in \\[0, 1\\]"),
        ({"drift_threshold": 0}, "drift_threshold must be > 0"),
        ({"samples_per_s": -1}, "samples_per_s must be >= 0.*EDGE_SAMPLES_PER_S"),
        ({"samples_burst": 0}, "samples_burst must be >= 1"),
        ({"samples_device_per_min": 0}, "samples_device_per_min must be > 0"),
        ({"samples_random_share": 2}, "samples_random_share must be in"),
        ({"samples_topic": " "}, "samples_topic is empty"),
        ({"input_topic": "samples"}, "equals the samples topic"),
    ],
)
def test_invalid_monitoring_settings_name_the_fix(flags: dict[str, object], match: str) -> None:
    with pytest.raises(AgentConfigError, match=match):
        agent_config(flags={"bundle": "/b", **flags}, environ={})
