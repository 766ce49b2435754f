"""Subcommands ``demo``, ``monitor`` and ``top`` (declared here; work modules are imported
lazily)."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="run the whole system end to end on the embedded broker, with a live view",
        description="Train (or reuse) a sensor and an image model, sign and publish them, "
        "start two agents per model, replay the real datasets, swap a model midway, "
        "and print a summary. Ctrl-C stops everything.",
    )
    demo.add_argument(
        "--scenario",
        choices=("fleet", "drift"),
        default="fleet",
        help="fleet (default): two models, four agents, a mid-run swap; drift: the closed "
        "loop (drift alert in Prometheus, samples, feedback, retrain, shadow, promote)",
    )
    demo.add_argument(
        "--workdir",
        default=None,
        help="where everything is written (default runs/demo, runs/demo-drift)",
    )
    demo.add_argument("--retrain", action="store_true", help="train even if runs exist")
    demo.add_argument("--agents-per-model", type=int, default=2)
    demo.add_argument("--sensor-rate", type=float, default=400.0, help="readings/s")
    demo.add_argument("--image-rate", type=float, default=40.0, help="images/s")
    demo.add_argument("--sensor-repeat", type=int, default=6, help="passes over BasicMotions")
    demo.add_argument("--image-repeat", type=int, default=4, help="passes over digits")
    demo.add_argument("--timeout", type=float, default=600.0, help="streaming phase limit (s)")
    drift = demo.add_argument_group("--scenario drift")
    drift.add_argument(
        "--undrifted-s", type=float, default=90.0, help="seconds of stream before the drift"
    )
    drift.add_argument(
        "--drift", default="darken:0.4", help="the field change (see `edgeinfer replay --drift`)"
    )
    drift.add_argument(
        "--drift-devices", type=float, default=0.75, help="share of the cameras that drift"
    )
    drift.add_argument(
        "--retrain-samples",
        type=int,
        default=300,
        help="samples captured before a candidate is retrained from them",
    )
    demo.set_defaults(handler="fleet.cli_handlers:run_demo")

    _monitor(sub)

    top = sub.add_parser(
        "top",
        help="live fleet view from the agents' metrics endpoints",
        description="Scrape each agent's /metrics and show rates, latency quantiles, "
        "dead letters, lag and model versions.",
    )
    top.add_argument(
        "--agents",
        required=True,
        help="comma-separated host:port of agent metrics endpoints",
    )
    top.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    top.add_argument("--iterations", type=int, default=None, help="stop after N refreshes")
    top.set_defaults(handler="fleet.cli_handlers:run_top")


def _monitor(sub: Any) -> None:
    from fleet.join import (
        DEFAULT_MAX_PENDING,
        DEFAULT_MAX_VERSIONS,
        DEFAULT_MAX_WAIT_S,
        DEFAULT_WINDOW,
    )
    from stream import topics
    from stream.settings import add_kafka_arguments

    p = sub.add_parser(
        "monitor",
        help="online accuracy per model version: join results with feedback, serve metrics",
        description="Consume the results and feedback topics in a consumer group of its own, "
        "join each result with the true label of its input (source topic, partition, offset) "
        "and serve Prometheus metrics: edgeinfer_online_accuracy{model,version} over the "
        "last --window joined results, and counters (docs/metrics.md). Run one per fleet.",
    )
    p.add_argument(
        "--results-topic",
        default=topics.RESULTS,
        help=f"results to score (default {topics.RESULTS})",
    )
    p.add_argument(
        "--feedback-topic",
        default=topics.FEEDBACK,
        help=f"true labels (default {topics.FEEDBACK})",
    )
    p.add_argument(
        "--group", default="edgeinfer-monitor", help="consumer group (default edgeinfer-monitor)"
    )
    p.add_argument(
        "--from-beginning",
        action="store_true",
        help="a new group starts at the oldest messages (default: only new ones)",
    )
    p.add_argument(
        "--window",
        type=int,
        default=DEFAULT_WINDOW,
        help=f"joined results the accuracy is computed over (default {DEFAULT_WINDOW})",
    )
    p.add_argument(
        "--max-pending",
        type=int,
        default=DEFAULT_MAX_PENDING,
        help="results waiting for feedback, and feedback waiting for results, kept at most "
        f"(each; default {DEFAULT_MAX_PENDING}, oldest evicted)",
    )
    p.add_argument(
        "--max-wait-s",
        type=float,
        default=DEFAULT_MAX_WAIT_S,
        help=f"longest a result or feedback waits for the other (default {DEFAULT_MAX_WAIT_S:g})",
    )
    p.add_argument(
        "--max-versions",
        type=int,
        default=DEFAULT_MAX_VERSIONS,
        help=f"model versions tracked at most (default {DEFAULT_MAX_VERSIONS}, the least "
        "recently joined dropped)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=9401,
        help="port of /metrics, /healthz, /readyz (default 9401; 0 = any)",
    )
    p.add_argument(
        "--metrics-host",
        default="0.0.0.0",
        help="address they listen on (default 0.0.0.0)",  # noqa: S104
    )
    add_kafka_arguments(p)
    p.set_defaults(handler="fleet.monitor:run_monitor")
