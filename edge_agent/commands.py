"""Subcommands of ``edgeinfer`` contributed by the edge agent: ``agent`` and ``rollback``.

Only argument declarations live here (and the tiny rollback handler); the agent's modules
are imported when ``edgeinfer agent`` runs (see stream/cli.py). Every flag defaults to
None so that the precedence flag > ``EDGE_*`` > config file > default is applied in
:mod:`edge_agent.config`; help texts show the defaults and variables.
"""

from __future__ import annotations

import argparse
from typing import Any

from edge_agent.transport import CLIENT_CHOICES
from stream import topics
from stream.env import env_name
from stream.settings import add_kafka_arguments


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        msg = f"{text!r} is not an integer"
        raise argparse.ArgumentTypeError(msg) from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        msg = f"{text!r} is not a number"
        raise argparse.ArgumentTypeError(msg) from None


def _opt(group: Any, flag: str, setting: str, help_text: str, **kwargs: Any) -> None:
    if "type" in kwargs and "metavar" not in kwargs:
        kwargs["metavar"] = "N" if kwargs["type"] is _int else "X"
    group.add_argument(flag, dest=setting, help=f"{help_text} [env: {env_name(setting)}]", **kwargs)


def register(sub: Any) -> None:
    """Add ``agent`` and ``rollback`` to ``sub`` (an argparse subparsers action)."""
    _agent(sub)
    _rollback(sub)


def _agent(sub: Any) -> None:
    p = sub.add_parser(
        "agent",
        help="run the edge agent: LiteRT inference on a Kafka topic",
        description="Consume sensor readings or images from Kafka, run the model with LiteRT "
        "(no TensorFlow), produce results and dead letters, expose /metrics, /healthz and "
        "/readyz. Settings: flag > EDGE_* variable > --config file ([agent] and [kafka] "
        "tables) > default. SIGTERM drains (finish the batch, produce, commit) and exits 0. "
        "See docs/agent.md.",
    )
    m = p.add_argument_group("model (choose exactly one source)")
    _opt(m, "--bundle", "bundle", "a bundle folder (model.tflite + manifest.json)", metavar="DIR")
    _opt(m, "--registry", "registry", "a registry folder to follow (with --model)", metavar="DIR")
    _opt(
        m,
        "--models-topic",
        "models_topic",
        f"follow model announcements on this topic (with --model), e.g. {topics.MODELS}",
        metavar="TOPIC",
    )
    _opt(m, "--model", "model", "model name to follow in the registry or models topic")
    _opt(m, "--pin", "pin", "serve only this version (no automatic upgrades)", metavar="VERSION")
    _opt(
        m,
        "--public-key",
        "public_key",
        "Ed25519 public key (PEM), or a folder of *.pub keys (during a key rotation): only "
        "bundles signed by it run; required unless --allow-unsigned",
        metavar="PATH",
    )
    _opt(
        m,
        "--allow-unsigned",
        "allow_unsigned",
        "also run unsigned bundles (development only: logged as a warning, shown by "
        "edge_agent_model_unsigned_allowed and `edgeinfer top`)",
        action="store_const",
        const=True,
    )
    _opt(
        m,
        "--min-version",
        "min_version",
        "never run a version below this one (the anti-rollback floor of a new device)",
        metavar="VERSION",
    )
    _opt(
        m,
        "--trust-registry-pin",
        "trust_registry_pin",
        "let the registry's pin file (edgeinfer rollback) move this agent below the highest "
        "version it verified; without it such a pin is ignored and logged",
        action="store_const",
        const=True,
    )
    _opt(
        m,
        "--max-model-bytes",
        "max_model_bytes",
        "largest model file read (enforced while reading; default 268435456)",
        type=_int,
    )
    _opt(
        m,
        "--state-dir",
        "state_dir",
        "where the agent keeps models it received and its previous version "
        "(default ~/.local/state/edgeinfer)",
        metavar="DIR",
    )
    _opt(
        m,
        "--model-poll-s",
        "model_poll_s",
        "how often to look for a new model version, seconds (default 2)",
        type=_float,
    )
    _opt(
        m,
        "--model-wait-s",
        "model_wait_s",
        "how long to wait for the first model at start, seconds (default 60)",
        type=_float,
    )
    t = p.add_argument_group("topics and group")
    _opt(
        t,
        "--input",
        "input_topic",
        f"input topic (default {topics.SENSORS} or {topics.IMAGES} by the model's task)",
        metavar="TOPIC",
    )
    _opt(
        t, "--output", "output_topic", f"results topic (default {topics.RESULTS})", metavar="TOPIC"
    )
    _opt(
        t,
        "--deadletter",
        "deadletter_topic",
        f"dead-letter topic (default {topics.DEADLETTER})",
        metavar="TOPIC",
    )
    _opt(t, "--group", "group", "consumer group (default edgeinfer-<model name>)")
    _opt(
        t,
        "--group-instance-id",
        "group_instance_id",
        "static group membership (KIP-345): a stable id per agent; a restart keeps its "
        "partitions without a rebalance",
    )
    _opt(
        t,
        "--partitions",
        "partitions",
        "static assignment: read these partitions (e.g. 0,1) without group membership; "
        "offsets still committed under --group",
    )
    _opt(
        t,
        "--unassigned-limit-s",
        "unassigned_limit_s",
        "not ready after this long without a partition while the topic has some "
        "(default 120; 0 = never)",
        type=_float,
    )
    _opt(t, "--agent-id", "agent_id", "id in results and dead letters (default hostname-pid)")
    i = p.add_argument_group("inference")
    _opt(i, "--threads", "threads", "LiteRT interpreter threads (default 1)", type=_int)
    _opt(i, "--max-batch", "max_batch", "largest inference batch (default 32)", type=_int)
    _opt(
        i,
        "--max-latency-ms",
        "max_latency_ms",
        "longest an input waits for its batch to fill, ms (default 0: run what each poll brought)",
        type=_float,
    )
    w = p.add_argument_group("sensor windows")
    _opt(
        w,
        "--max-devices",
        "max_devices",
        "devices with a window in memory; the least recently seen is evicted (default 10000)",
        type=_int,
    )
    _opt(
        w,
        "--device-idle-s",
        "device_idle_s",
        "drop the window of a device silent this long, seconds (default 600; 0 = never)",
        type=_float,
    )
    c = p.add_argument_group("consumer")
    _opt(
        c,
        "--client",
        "client",
        "Kafka client library: auto (default: confluent when confluent-kafka is installed, "
        "as with the agent extra, else kafka-python), confluent (librdkafka) or kafka-python",
        choices=CLIENT_CHOICES,
    )
    _opt(
        c,
        "--max-poll-records",
        "max_poll_records",
        "records handled per poll: bounds the work between polls (default 256)",
        type=_int,
    )
    _opt(
        c,
        "--fetch-max-wait-ms",
        "fetch_max_wait_ms",
        "longest a fetch waits for data; floors latency on the embedded broker (default 50)",
        type=_int,
    )
    _opt(
        c,
        "--max-poll-interval-ms",
        "max_poll_interval_ms",
        "the group drops a member that does not poll for this long (default 300000)",
        type=_int,
    )
    _opt(
        c,
        "--max-message-bytes",
        "max_message_bytes",
        "larger inputs are dead-lettered as too_large (default 4194304)",
        type=_int,
    )
    _opt(
        c,
        "--max-output-bytes",
        "max_output_bytes",
        "largest result or dead letter sent; set to the output topics' max.message.bytes "
        "(default 1048576)",
        type=_int,
    )
    h = p.add_argument_group("metrics and health")
    _opt(
        h,
        "--metrics-port",
        "metrics_port",
        "port of /metrics, /healthz, /readyz (default 9400; 0 = a free port, printed)",
        type=_int,
    )
    _opt(h, "--metrics-host", "metrics_host", "address to listen on (default 0.0.0.0)")
    _opt(
        h,
        "--stall-timeout-s",
        "stall_timeout_s",
        "/healthz fails when the pipeline loop has not advanced for this long, seconds "
        "(default max-poll-interval + 30 s)",
        type=_float,
    )
    _monitoring_options(p)
    _promotion_options(p)
    add_kafka_arguments(p)
    p.set_defaults(handler="edge_agent.agent:run_agent")


def _monitoring_options(p: Any) -> None:
    g = p.add_argument_group("monitoring and sample capture (docs/agent.md)")
    _opt(
        g,
        "--no-monitor",
        "monitor",
        "turn off confidence/drift monitoring and sample capture (default on)",
        action="store_const",
        const=False,
    )
    _opt(
        g,
        "--monitor-window",
        "monitor_window",
        "inputs in the monitor's sliding window, per model version (default 1000)",
        type=_int,
    )
    _opt(
        g,
        "--low-confidence",
        "low_confidence",
        "a result whose top-class score is below this is low-confidence (default 0.5)",
        type=_float,
    )
    _opt(
        g,
        "--drift-threshold",
        "drift_threshold",
        "input drift score (PSI) from which inputs are captured as drift-flagged (default 0.1)",
        type=_float,
    )
    _opt(
        g,
        "--samples-topic",
        "samples_topic",
        f"topic of captured samples (default {topics.SAMPLES})",
        metavar="TOPIC",
    )
    _opt(
        g,
        "--samples-per-s",
        "samples_per_s",
        "samples sent per second at most, on average (default 0.2; 0 = no capture)",
        type=_float,
    )
    _opt(
        g,
        "--samples-burst",
        "samples_burst",
        "samples sent at once at most (default 10)",
        type=_int,
    )
    _opt(
        g,
        "--samples-device-per-min",
        "samples_device_per_min",
        "samples of one device per minute at most (default 2)",
        type=_float,
    )
    _opt(
        g,
        "--samples-random-share",
        "samples_random_share",
        "share of the sample budget for inputs chosen at random, for calibration (default 0.1)",
        type=_float,
    )


def _promotion_options(p: Any) -> None:
    g = p.add_argument_group("shadow and promote (docs/models.md)")
    _opt(
        g,
        "--promotion",
        "promotion",
        "direct (default: a newer verified version serves at once) or shadow (it runs in "
        "shadow next to the serving one; the gates below promote or reject it)",
        choices=("direct", "shadow"),
    )
    _opt(
        g,
        "--shadow-share",
        "shadow_share",
        "share of the inputs the candidate answers in shadow (default 1)",
        type=_float,
    )
    _opt(
        g,
        "--shadow-min-inputs",
        "shadow_min_inputs",
        "inputs answered by both models before the gates decide (default 200)",
        type=_int,
    )
    _opt(
        g,
        "--shadow-agreement",
        "shadow_agreement",
        "share of top labels the candidate must share with the serving model, when inputs "
        "carry no true label (default 0.9)",
        type=_float,
    )
    _opt(
        g,
        "--shadow-accuracy-margin",
        "shadow_accuracy_margin",
        "with labelled inputs, the candidate's accuracy may be this much below the serving "
        "model's (default 0.02); takes precedence over agreement",
        type=_float,
    )
    _opt(
        g,
        "--shadow-latency-factor",
        "shadow_latency_factor",
        "candidate median time per input at most this many times the serving model's (default 3)",
        type=_float,
    )
    _opt(
        g,
        "--shadow-max-errors",
        "shadow_max_errors",
        "unusable candidate outputs (exception, NaN, wrong shape) tolerated (default 0)",
        type=_int,
    )
    _opt(
        g,
        "--shadow-queue",
        "shadow_queue",
        "batches waiting for the shadow worker; inputs beyond are dropped, counted (default 8)",
        type=_int,
    )


def _rollback(sub: Any) -> None:
    p = sub.add_parser(
        "rollback",
        help="pin a model to its previous (or a given) version in a registry",
        description="Write the registry's pin so every agent following it (--registry DIR "
        "--model NAME) switches to that version within --model-poll-s. Without --to, pins "
        "the version before the one currently served (the pinned one, else the latest). "
        "The pin file is unsigned: an agent moves below the highest version it verified "
        "only when started with --trust-registry-pin.",
    )
    p.add_argument(
        "--registry",
        help=f"registry folder (default ./registry) [env: {env_name('registry')}]",
    )
    p.add_argument("--model", required=True, help="model name")
    p.add_argument("--to", metavar="VERSION", help="the version to pin (default: the previous)")
    p.set_defaults(handler="edge_agent.commands:run_rollback")


def run_rollback(args: argparse.Namespace) -> int:
    """``edgeinfer rollback --registry DIR --model NAME [--to VERSION]``."""
    from edge_agent.exceptions import AgentConfigError
    from stream.registry import Registry, registry_root, version_key

    registry = Registry(registry_root(args.registry))
    name = args.model
    versions = registry.versions(name)
    if not versions:
        msg = f"model {name!r} has no published versions in {registry.root}; check --registry"
        raise AgentConfigError(msg)
    current = registry.current(name)
    target = args.to
    if target is None:
        if current not in versions or versions.index(current) == 0:
            msg = (
                f"model {name!r} serves {current}, the oldest published version: there is no "
                f"previous one (published: {', '.join(versions)}); pass --to VERSION"
            )
            raise AgentConfigError(msg)
        target = versions[versions.index(current) - 1]
    registry.pin(name, target)
    print(f"{name}: pinned {target} (was {current}); agents following {registry.root} switch to it")
    if current is not None and version_key(target) < version_key(current):
        print(
            "note: the pin file is unsigned, so agents that served a newer version follow "
            "this downgrade only when started with --trust-registry-pin "
            "(EDGE_TRUST_REGISTRY_PIN=1); others keep their version and log the pin"
        )
    return 0
