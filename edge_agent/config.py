"""The agent's settings: one frozen object built from flags, ``EDGE_*`` and a config file.

Precedence, as for the Kafka settings: command-line flag > ``EDGE_*`` environment variable
> the config file's ``[agent]`` table (TOML) > default. The environment is read only in
:mod:`stream.env`; this module receives it from there. The Kafka connection settings come
from :mod:`stream.settings` (the ``[kafka]`` table and the same precedence).

Why one module of this size: it is the one table of every agent setting (field, default,
converter, validation rule and the flag named in each error message), read top to bottom
by anyone adding a setting; splitting it would scatter one setting over several files.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edge_agent.exceptions import AgentConfigError
from edge_agent.transport import CLIENT_CHOICES
from stream import topics
from stream.bundle import DEFAULT_MAX_MODEL_BYTES
from stream.env import edge_environment, env_name
from stream.registry import is_valid_component, version_key
from stream.settings import KafkaSettings, kafka_settings, load_config_file, merge_sources

DEFAULT_METRICS_PORT = 9400
#: Added to max_poll_interval for the default stall limit: flush (15 s) + commit (10 s) + 5 s.
STALL_MARGIN_S = 30.0


def default_agent_id() -> str:
    """``<hostname>-<pid>``: unique per process on a device, readable in dead letters."""
    return f"{socket.gethostname()}-{os.getpid()}"


def default_state_dir() -> Path:
    return Path.home() / ".local" / "state" / "edgeinfer"


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """Validated, immutable agent settings. ``repr`` masks secrets (through KafkaSettings)."""

    # Where the model comes from: exactly one of these three.
    bundle: Path | None = None
    registry: Path | None = None
    models_topic: str | None = None
    model: str | None = None
    pin: str | None = None
    #: Ed25519 public key (PEM), or a folder of ``*.pub`` keys (a rotation trusts two).
    public_key: Path | None = None
    #: Run unsigned bundles too (development only: warned, edge_agent_model_unsigned_allowed).
    allow_unsigned: bool = False
    #: No version below this ever runs (anti-rollback floor for a fresh state dir).
    min_version: str | None = None
    #: Let the registry's unsigned ``pinned`` file move the agent below the highest version
    #: it verified (``edgeinfer rollback`` for a fleet whose registry is trusted).
    trust_registry_pin: bool = False
    #: Hard cap on a model file, enforced while it is read.
    max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES
    state_dir: Path = field(default_factory=default_state_dir)
    model_poll_s: float = 2.0
    model_wait_s: float = 60.0
    # Topics and group.
    input_topic: str | None = None
    output_topic: str = topics.RESULTS
    deadletter_topic: str = topics.DEADLETTER
    group: str | None = None
    #: Static membership (KIP-345): this agent's stable id in the group (e.g. the device's
    #: name); a restart within the session timeout keeps its partitions, no rebalance.
    group_instance_id: str | None = None
    #: Static assignment: read exactly these input partitions without group membership
    #: (offsets still committed under the group id); None = join the group.
    partitions: tuple[int, ...] | None = None
    #: Not ready after this long without a partition while the topic has some (a wedged
    #: group coordinator); 0 = never (deliberately over-provisioned groups).
    unassigned_limit_s: float = 120.0
    agent_id: str = field(default_factory=default_agent_id)
    # Inference.
    threads: int = 1
    max_batch: int = 32
    #: 0: a batch runs as soon as a poll has been handled, with what it brought (waiting
    #: for more only delays those inputs: docs/agent.md, "Batch"); > 0 holds an input up to
    #: that long for its batch to fill.
    max_latency_ms: float = 0.0
    # Sensor windows.
    max_devices: int = 10_000
    device_idle_s: float = 600.0
    # Consumer loop.
    #: Kafka client library: "auto" (default: confluent when importable, else
    #: kafka-python), "confluent" (librdkafka) or "kafka-python".
    client: str = "auto"
    max_poll_records: int = 256
    #: How long a fetch may wait for data. Kafka answers as soon as data arrives; the
    #: embedded broker (Tansu) answers only when this runs out, so it floors latency there.
    fetch_max_wait_ms: int = 50
    max_poll_interval_ms: int = 300_000
    max_message_bytes: int = 4 * 1024 * 1024
    #: Largest result or dead letter the producer sends: Kafka's default topic limit
    #: (max.message.bytes). A larger one is refused before it leaves (a dead letter is then
    #: sent without the input's value; docs/agent.md "Errors no retry can fix").
    max_output_bytes: int = 1024 * 1024
    # Health and metrics.
    metrics_port: int = DEFAULT_METRICS_PORT
    metrics_host: str = "0.0.0.0"
    #: /healthz fails when the pipeline loop has not started a step for this long; None =
    #: max_poll_interval_ms + 30 s (see :meth:`stall_limit_s`).
    stall_timeout_s: float | None = None
    # Monitoring and sample capture (docs/agent.md "Monitoring and samples").
    #: Confidence and input-drift monitoring, and sample capture; False turns both off.
    monitor: bool = True
    #: Inputs in the monitor's sliding window (per model version).
    monitor_window: int = 1000
    #: A result whose top-class score is below this is low-confidence.
    low_confidence: float = 0.5
    #: Input drift score (PSI) at which inputs count as drift-flagged for sample capture.
    drift_threshold: float = 0.1
    samples_topic: str = topics.SAMPLES
    #: Samples sent per second at most, on average (0 = no sample capture).
    samples_per_s: float = 0.2
    #: Samples sent at once at most (the token bucket's size).
    samples_burst: int = 10
    #: Samples of one device per minute at most.
    samples_device_per_min: float = 2.0
    #: Share of the sample budget spent on inputs chosen at random (calibration).
    samples_random_share: float = 0.1
    # Shadow and promote (docs/models.md "Shadow and promote").
    #: "direct": a newer verified version serves at once; "shadow": it runs in shadow next
    #: to the serving one and is promoted or rejected by the gates below.
    promotion: str = "direct"
    #: Share of the inputs the candidate answers in shadow.
    shadow_share: float = 1.0
    #: Inputs answered by both models before the gates decide.
    shadow_min_inputs: int = 200
    #: Share of inputs whose top label must agree with the serving model's (no labels).
    shadow_agreement: float = 0.9
    #: Candidate accuracy may be this much below the serving model's (labelled inputs).
    shadow_accuracy_margin: float = 0.02
    #: Candidate median time per input at most this many times the serving model's.
    shadow_latency_factor: float = 3.0
    #: Unusable candidate outputs (exceptions, NaN, wrong shape) tolerated.
    shadow_max_errors: int = 0
    #: Batches waiting for the shadow worker; beyond it inputs are dropped (counted).
    shadow_queue: int = 8
    kafka: KafkaSettings = field(default_factory=KafkaSettings)

    def __post_init__(self) -> None:
        _validate(self)

    def input_for_task(self, task: str) -> str:
        """The input topic: the configured one, else ``sensors`` or ``images`` by task."""
        if self.input_topic:
            return self.input_topic
        return topics.SENSORS if task.startswith("sequence") else topics.IMAGES

    def group_for(self, model_name: str) -> str:
        """The consumer group: the configured one, else ``edgeinfer-<model>``."""
        return self.group or f"edgeinfer-{model_name}"

    def stall_limit_s(self) -> float:
        """How long the pipeline loop may go without starting a step before /healthz fails.

        Default: ``max_poll_interval_ms`` (the work between two polls may legitimately take
        that long; beyond it Kafka drops the member from its group anyway) plus one producer
        flush (15 s) and one commit (10 s), plus 5 s of margin.
        """
        if self.stall_timeout_s is not None:
            return self.stall_timeout_s
        return self.max_poll_interval_ms / 1000.0 + STALL_MARGIN_S

    def describe(self) -> dict[str, Any]:
        """The effective settings for the start-up log line (secrets masked)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = repr(value) if f.name == "kafka" else value
        return out


def _validate(c: AgentConfig) -> None:
    sources = [n for n in ("bundle", "registry", "models_topic") if getattr(c, n)]
    if len(sources) != 1:
        msg = (
            "choose exactly one model source: --bundle DIR, --registry DIR --model NAME or "
            f"--models-topic TOPIC --model NAME (got {sources or 'none'}; env "
            f"{env_name('bundle')}, {env_name('registry')}, {env_name('models_topic')})"
        )
        raise AgentConfigError(msg)
    if (c.registry or c.models_topic) and not c.model:
        msg = (
            f"--{'registry' if c.registry else 'models-topic'} needs --model NAME "
            f"(or {env_name('model')}): which model to follow"
        )
        raise AgentConfigError(msg)
    positive_ints = (
        "threads",
        "max_batch",
        "max_devices",
        "max_poll_records",
        "fetch_max_wait_ms",
        "max_poll_interval_ms",
        "max_message_bytes",
        "max_model_bytes",
        "max_output_bytes",
    )
    for name in positive_ints:
        if getattr(c, name) < 1:
            msg = (
                f"{name} must be >= 1, got {getattr(c, name)}; "
                f"fix --{_flag(name)} or {env_name(name)}"
            )
            raise AgentConfigError(msg)
    if c.partitions is not None and (not c.partitions or min(c.partitions) < 0):
        msg = (
            f"partitions must be a comma-separated list of partition numbers >= 0, got "
            f"{c.partitions}; fix --partitions or {env_name('partitions')}"
        )
        raise AgentConfigError(msg)
    if c.partitions is not None and c.group_instance_id:
        msg = (
            "--partitions (static assignment, no group membership) and --group-instance-id "
            "(static group membership) exclude each other; choose one"
        )
        raise AgentConfigError(msg)
    names = (
        "max_latency_ms",
        "device_idle_s",
        "model_poll_s",
        "model_wait_s",
        "unassigned_limit_s",
    )
    for name in names:
        if getattr(c, name) < 0:
            msg = (
                f"{name} must be >= 0, got {getattr(c, name)}; "
                f"fix --{_flag(name)} or {env_name(name)}"
            )
            raise AgentConfigError(msg)
    _validate_supply(c)
    _validate_monitoring(c)
    _validate_promotion(c)
    if c.client not in CLIENT_CHOICES:
        msg = (
            f"client must be one of {', '.join(CLIENT_CHOICES)}, got {c.client!r}; "
            f"fix --client or {env_name('client')}"
        )
        raise AgentConfigError(msg)
    if not 0 <= c.metrics_port < 65536:
        msg = (
            f"metrics_port must be 0..65535 (0 = any free port), got {c.metrics_port}; "
            f"fix --metrics-port or {env_name('metrics_port')}"
        )
        raise AgentConfigError(msg)
    if c.max_poll_interval_ms < c.kafka.session_timeout_ms:
        msg = (
            f"max_poll_interval_ms ({c.max_poll_interval_ms}) must be >= the session timeout "
            f"({c.kafka.session_timeout_ms} ms); raise --max-poll-interval-ms"
        )
        raise AgentConfigError(msg)
    for name in ("input_topic", "output_topic", "deadletter_topic", "models_topic", "group"):
        value = getattr(c, name)
        if value is not None and not str(value).strip():
            msg = f"{name} is empty; fix --{_flag(name)} or {env_name(name)}"
            raise AgentConfigError(msg)
    if c.input_topic and c.input_topic in (c.output_topic, c.deadletter_topic):
        msg = f"input topic {c.input_topic!r} equals an output topic: the agent would loop"
        raise AgentConfigError(msg)


def _validate_supply(c: AgentConfig) -> None:
    """Versions and the stall limit: the model supply's settings."""
    for name in ("pin", "min_version"):
        value = getattr(c, name)
        if value is not None and not is_valid_component(value):
            msg = (
                f"{name} {value!r} is not a version (letters, digits, '.', '_', '+', '-'); "
                f"fix --{_flag(name)} or {env_name(name)}"
            )
            raise AgentConfigError(msg)
    if c.pin and c.min_version and version_key(c.pin) < version_key(c.min_version):
        msg = (
            f"pin {c.pin} is below min_version {c.min_version}: nothing below it runs; "
            f"lower --min-version ({env_name('min_version')}) or pin another version"
        )
        raise AgentConfigError(msg)
    if c.stall_timeout_s is not None and c.stall_timeout_s <= 0:
        msg = (
            f"stall_timeout_s must be > 0, got {c.stall_timeout_s}; fix --stall-timeout-s or "
            f"{env_name('stall_timeout_s')} (unset: max_poll_interval_ms + 30 s)"
        )
        raise AgentConfigError(msg)


def _validate_monitoring(c: AgentConfig) -> None:
    """Monitoring and sample capture: windows, thresholds, rates, the samples topic."""
    checks = (
        ("monitor_window", c.monitor_window >= 1, ">= 1"),
        ("low_confidence", 0 <= c.low_confidence <= 1, "in [0, 1]"),
        ("drift_threshold", c.drift_threshold > 0, "> 0"),
        ("samples_per_s", c.samples_per_s >= 0, ">= 0 (0 = no sample capture)"),
        ("samples_burst", c.samples_burst >= 1, ">= 1"),
        ("samples_device_per_min", c.samples_device_per_min > 0, "> 0"),
        ("samples_random_share", 0 <= c.samples_random_share <= 1, "in [0, 1]"),
    )
    for name, ok, rule in checks:
        if not ok:
            msg = (
                f"{name} must be {rule}, got {getattr(c, name)}; "
                f"fix --{_flag(name)} or {env_name(name)}"
            )
            raise AgentConfigError(msg)
    if not c.samples_topic.strip():
        msg = f"samples_topic is empty; fix --samples-topic or {env_name('samples_topic')}"
        raise AgentConfigError(msg)
    if c.input_topic and c.input_topic == c.samples_topic:
        msg = f"input topic {c.input_topic!r} equals the samples topic: the agent would loop"
        raise AgentConfigError(msg)


PROMOTIONS = ("direct", "shadow")


def _validate_promotion(c: AgentConfig) -> None:
    """Shadow promotion: the policy and its gates."""
    if c.promotion not in PROMOTIONS:
        msg = (
            f"promotion must be one of {', '.join(PROMOTIONS)}, got {c.promotion!r}; "
            f"fix --promotion or {env_name('promotion')}"
        )
        raise AgentConfigError(msg)
    checks = (
        ("shadow_share", 0 < c.shadow_share <= 1, "in (0, 1]"),
        ("shadow_min_inputs", c.shadow_min_inputs >= 1, ">= 1"),
        ("shadow_agreement", 0 <= c.shadow_agreement <= 1, "in [0, 1]"),
        ("shadow_accuracy_margin", 0 <= c.shadow_accuracy_margin <= 1, "in [0, 1]"),
        ("shadow_latency_factor", c.shadow_latency_factor > 0, "> 0"),
        ("shadow_max_errors", c.shadow_max_errors >= 0, ">= 0"),
        ("shadow_queue", c.shadow_queue >= 1, ">= 1"),
    )
    for name, ok, rule in checks:
        if not ok:
            msg = (
                f"{name} must be {rule}, got {getattr(c, name)}; "
                f"fix --{_flag(name)} or {env_name(name)}"
            )
            raise AgentConfigError(msg)


# Field name -> the flag that sets it (when not --field-name).
_FLAGS = {
    "input_topic": "input",
    "output_topic": "output",
    "deadletter_topic": "deadletter",
}


def _flag(name: str) -> str:
    return _FLAGS.get(name, name).replace("_", "-")


def _to_path(value: Any) -> Path:
    return Path(str(value)).expanduser()


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(value)
    return int(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(value)
    return float(value)


_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True}
_BOOLEANS.update({"0": False, "false": False, "no": False, "off": False})


def _to_partitions(value: Any) -> tuple[int, ...]:
    """``"0,1,2"`` (or a list) -> ``(0, 1, 2)``, sorted, without repeats."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(sorted({int(str(v).strip()) for v in items if str(v).strip()}))


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return _BOOLEANS[str(value).strip().lower()]  # KeyError: not a boolean


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "bundle": _to_path,
    "registry": _to_path,
    "public_key": _to_path,
    "state_dir": _to_path,
    "threads": _to_int,
    "max_batch": _to_int,
    "max_devices": _to_int,
    "max_poll_records": _to_int,
    "fetch_max_wait_ms": _to_int,
    "max_poll_interval_ms": _to_int,
    "max_message_bytes": _to_int,
    "max_model_bytes": _to_int,
    "allow_unsigned": _to_bool,
    "trust_registry_pin": _to_bool,
    "stall_timeout_s": _to_float,
    "max_output_bytes": _to_int,
    "metrics_port": _to_int,
    "max_latency_ms": _to_float,
    "device_idle_s": _to_float,
    "model_poll_s": _to_float,
    "model_wait_s": _to_float,
    "partitions": _to_partitions,
    "unassigned_limit_s": _to_float,
    "monitor": _to_bool,
    "monitor_window": _to_int,
    "low_confidence": _to_float,
    "drift_threshold": _to_float,
    "samples_per_s": _to_float,
    "samples_burst": _to_int,
    "samples_device_per_min": _to_float,
    "samples_random_share": _to_float,
    "shadow_share": _to_float,
    "shadow_min_inputs": _to_int,
    "shadow_agreement": _to_float,
    "shadow_accuracy_margin": _to_float,
    "shadow_latency_factor": _to_float,
    "shadow_max_errors": _to_int,
    "shadow_queue": _to_int,
}
#: Settings that can come from flags, env or the [agent] table (kafka has its own).
SETTING_NAMES: tuple[str, ...] = tuple(f.name for f in fields(AgentConfig) if f.name != "kafka")


def _coerce(name: str, value: Any, source: str) -> Any:
    convert = _CONVERTERS.get(name, str)
    try:
        return convert(value)
    except (TypeError, ValueError, KeyError):
        msg = f"{name} from {source} has the wrong type: {value!r}"
        raise AgentConfigError(msg) from None


def agent_config(
    *,
    flags: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    kafka: KafkaSettings | None = None,
) -> AgentConfig:
    """Merge flag > ``EDGE_*`` > config file ``[agent]`` > default, then validate.

    ``config`` is the parsed TOML file (its ``[kafka]`` table feeds the Kafka settings
    unless ``kafka`` is given).
    """
    values = merge_sources(
        names=SETTING_NAMES,
        table="agent",
        coerce=_coerce,
        flags=flags,
        config=config,
        environ=environ,
        error=AgentConfigError,
    )
    if kafka is None:
        kafka = kafka_settings(flags=flags, config=config, environ=environ)
    return AgentConfig(kafka=kafka, **values)


def config_from_args(args: Any, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Build the config from an ``argparse.Namespace`` of ``edgeinfer agent``."""
    env = edge_environment(environ)
    config_path = getattr(args, "config", None) or env.get("config")
    config = load_config_file(config_path)
    names = set(SETTING_NAMES) | {f.name for f in fields(KafkaSettings)}
    flags = {name: getattr(args, name, None) for name in names}
    return agent_config(flags=flags, config=config, environ=environ)
