"""Subcommands of ``edgeinfer`` contributed by ``stream``: broker, topics, replay, tail,
keys, verify, publish.

Only argument declarations live here; each handler (``"module:function"``) is imported
when its subcommand runs (see stream/cli.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeVar

from stream import topics
from stream.settings import add_kafka_arguments

_N = TypeVar("_N", int, float)


def _at_least(parse: Callable[[str], _N], minimum: _N, what: str) -> Callable[[str], _N]:
    """An argparse ``type``: ``parse(text)``, refused (naming the bound) below ``minimum``."""

    def check(text: str) -> _N:
        try:
            value = parse(text)
        except ValueError:
            msg = f"{text!r} is not {what}"
            raise argparse.ArgumentTypeError(msg) from None
        if value < minimum:
            msg = f"must be >= {minimum:g}, got {value}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return check


_positive_int = _at_least(int, 1, "an integer")
_non_negative_int = _at_least(int, 0, "an integer")
_non_negative_float = _at_least(float, 0.0, "a number")


def _share(text: str) -> float:
    """An argparse ``type``: a number in [0, 1]."""
    value = _non_negative_float(text)
    if value > 1.0:
        msg = f"must be <= 1, got {value}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _required_subcommands(p: argparse.ArgumentParser, dest: str) -> Any:
    """``p``'s subcommands, one of which must be given (metavar: ``dest`` upper-cased)."""
    actions = p.add_subparsers(dest=dest, metavar=dest.upper())
    actions.required = True
    return actions


def _kafka_command(p: argparse.ArgumentParser, handler: str) -> None:
    """``p`` talks to Kafka (the connection flags) and runs ``handler``."""
    add_kafka_arguments(p)
    p.set_defaults(handler=handler)


def register(sub: Any) -> None:
    """Add the stream subcommands to ``sub`` (an argparse subparsers action)."""
    for add in (_broker, _topics, _replay, _tail, _keys, _verify, _publish):
        add(sub)


def _broker(sub: Any) -> None:
    p = sub.add_parser(
        "broker",
        help="run the embedded Kafka-compatible broker (Tansu, memory-only) until Ctrl-C",
        description="Run the embedded development broker (Tansu, memory only: for the demo, "
        "development and tests, not production). Prints its bootstrap address.",
    )
    p.add_argument("--port", type=int, default=9092, help="port to listen on (default 9092)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--advertised",
        metavar="HOST:PORT",
        help="address advertised to clients in metadata (default: the listening address)",
    )
    p.add_argument("--log-file", help="write the broker's log here (default: a temporary file)")
    p.add_argument(
        "--startup-timeout", type=float, default=30.0, help="seconds to wait for it (default 30)"
    )
    p.set_defaults(handler="stream.broker:run_broker")


def _topics(sub: Any) -> None:
    p = sub.add_parser("topics", help="create or list topics")
    actions = _required_subcommands(p, "action")
    ensure = actions.add_parser(
        "ensure", help="create the topics that do not exist yet (existing ones are kept)"
    )
    ensure.add_argument(
        "--partitions", type=_positive_int, default=4, help="partitions per new topic (default 4)"
    )
    ensure.add_argument(
        "--topic",
        action="append",
        help=f"a topic to ensure, repeatable (default: all of {', '.join(topics.ALL_TOPICS)})",
    )
    _kafka_command(ensure, "stream.kafka:run_topics")
    listing = actions.add_parser("list", help="list topics and their partition counts")
    _kafka_command(listing, "stream.kafka:run_topics")


def _replay_common(p: argparse.ArgumentParser, *, default_topic: str, unit: str) -> None:
    p.add_argument(
        "--split",
        choices=("train", "test", "all"),
        default="test",
        help="which split to replay (default test)",
    )
    p.add_argument(
        "--rate",
        type=_non_negative_float,
        default=100.0,
        help=f"{unit} per second over the whole fleet (default 100; 0 = as fast as possible)",
    )
    p.add_argument(
        "--topic", default=default_topic, help=f"topic to write to (default {default_topic})"
    )
    p.add_argument(
        "--limit", type=_positive_int, help="replay only the first N recordings of the split"
    )
    p.add_argument(
        "--repeat",
        type=_non_negative_int,
        default=1,
        help="replay the split N times (default 1; 0 = until Ctrl-C)",
    )
    p.add_argument("--device-prefix", help="device id prefix (default from the dataset, e.g. bm)")
    p.add_argument(
        "--partitions",
        type=_positive_int,
        default=4,
        help="create the topic with this many partitions if it does not exist (default 4)",
    )
    p.add_argument(
        "--drift",
        metavar="KIND:AMOUNT[@CHANNELS]",
        help="simulate a field change on some devices: darken:0.45 or rotate:1 (images), "
        "gain:1.5@0,1 or offset:2@0 (sensors; channels optional, default all)",
    )
    p.add_argument(
        "--drift-devices",
        type=float,
        default=1.0,
        help="share of the devices that drift, chosen by a hash of the device id (default 1)",
    )
    p.add_argument(
        "--drift-after",
        type=_non_negative_int,
        default=0,
        help="messages sent before the drift starts (default 0)",
    )
    p.add_argument(
        "--feedback",
        nargs="?",
        const=topics.FEEDBACK,
        metavar="TOPIC",
        help="play the labeller: after each input is acknowledged, send its true label to "
        f"TOPIC (default {topics.FEEDBACK}), keyed to where the input landed",
    )
    p.add_argument(
        "--feedback-share",
        type=_share,
        default=1.0,
        help="share of the inputs that get feedback, chosen at random (default 1)",
    )
    p.add_argument(
        "--feedback-delay-s",
        type=_non_negative_float,
        default=0.0,
        help="seconds between an input's acknowledgement and its feedback (default 0)",
    )
    _kafka_command(p, "stream.replay:run_replay")


def _replay(sub: Any) -> None:
    p = sub.add_parser("replay", help="replay a real dataset onto Kafka as a fleet of devices")
    kinds = _required_subcommands(p, "kind")
    sensors = kinds.add_parser(
        "sensors",
        help="sensor recordings, one device per recording, one reading per message",
        description="Each recording becomes one simulated device (id e.g. bm-test-007); its "
        "readings are sent one per message keyed by the device id, devices interleaved "
        "round-robin, the true class in header 'label'.",
    )
    sensors.add_argument(
        "--dataset",
        default="basic-motions",
        help="basic-motions (default) or npz:PATH with x (N, T, C) and y",
    )
    _replay_common(sensors, default_topic=topics.SENSORS, unit="readings")
    images = kinds.add_parser(
        "images",
        help="images from simulated cameras, encoded PNG/JPEG/.npy with headers",
    )
    images.add_argument(
        "--dataset",
        default="digits",
        help="digits (default), npz:PATH with uint8 x (N, H, W, C), or images:DIR",
    )
    images.add_argument(
        "--format",
        choices=("png", "jpeg", "npy"),
        default="png",
        help="encoding of each image (default png)",
    )
    images.add_argument(
        "--devices", type=_positive_int, default=4, help="simulated cameras (default 4)"
    )
    _replay_common(images, default_topic=topics.IMAGES, unit="images")


def _tail(sub: Any) -> None:
    p = sub.add_parser(
        "tail", help="print a topic's messages decoded (readings, images, results, dead letters)"
    )
    p.add_argument("topic", metavar="TOPIC", help="topic to read, e.g. sensors")
    p.add_argument("--max", type=_positive_int, help="stop after N messages")
    p.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the oldest message (default: only new ones)",
    )
    p.add_argument(
        "--group", help="join this consumer group and commit (default: no group, no commits)"
    )
    p.add_argument(
        "--idle-timeout",
        type=_non_negative_float,
        help="stop after this many seconds without a message",
    )
    _kafka_command(p, "stream.tail:run_tail")


def _keys(sub: Any) -> None:
    p = sub.add_parser("keys", help="manage the Ed25519 key pair that signs bundles")
    actions = _required_subcommands(p, "action")
    gen = actions.add_parser(
        "generate", help="write DIR/edgeinfer.key (private) and DIR/edgeinfer.pub"
    )
    gen.add_argument("--out", required=True, metavar="DIR", help="folder for the key pair")
    gen.add_argument("--force", action="store_true", help="replace an existing key pair")
    gen.set_defaults(handler="stream.registry:run_keys_generate")


def _verify(sub: Any) -> None:
    p = sub.add_parser("verify", help="check a bundle's model hash and (with --key) signature")
    p.add_argument("bundle", metavar="BUNDLE", help="bundle folder (model.tflite + manifest.json)")
    p.add_argument("--key", metavar="PUB", help="public key (.pub) the signature must verify with")
    p.set_defaults(handler="stream.registry:run_verify")


def _publish(sub: Any) -> None:
    p = sub.add_parser(
        "publish", help="copy a bundle into the registry and announce it on the models topic"
    )
    p.add_argument("bundle", metavar="BUNDLE", help="bundle folder to publish")
    p.add_argument(
        "--registry",
        metavar="DIR",
        help="registry folder (default ./registry) [env: EDGE_REGISTRY]",
    )
    p.add_argument(
        "--topic", default=topics.MODELS, help=f"announcement topic (default {topics.MODELS})"
    )
    p.add_argument("--no-topic", action="store_true", help="only copy into the registry")
    p.add_argument("--key", metavar="PUB", help="refuse the bundle unless signed by this key")
    p.add_argument(
        "--inline-limit",
        type=_positive_int,
        default=900_000,
        help="announce by file:// URI instead of inline above this many bytes (default 900000)",
    )
    p.add_argument(
        "--rollout-share",
        type=float,
        metavar="X",
        help="only this share (0..1) of the agents, chosen by a hash of their --agent-id, "
        "adopt the version (written to the version's rollout.json and the announcement; "
        "default: all)",
    )
    p.add_argument(
        "--rollout-mode",
        choices=("serve", "shadow"),
        help="serve (default: the agents' own --promotion) or shadow (agents in the share "
        "shadow the version and promote it only by the gates); docs/models.md",
    )
    _kafka_command(p, "stream.registry:run_publish")
