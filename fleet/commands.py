"""Subcommands ``demo`` and ``top`` (declared here; work modules are imported lazily)."""

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
    demo.add_argument("--workdir", default="runs/demo", help="where everything is written")
    demo.add_argument("--retrain", action="store_true", help="train even if runs exist")
    demo.add_argument("--agents-per-model", type=int, default=2)
    demo.add_argument("--sensor-rate", type=float, default=400.0, help="readings/s")
    demo.add_argument("--image-rate", type=float, default=40.0, help="images/s")
    demo.add_argument("--sensor-repeat", type=int, default=6, help="passes over BasicMotions")
    demo.add_argument("--image-repeat", type=int, default=4, help="passes over digits")
    demo.add_argument("--timeout", type=float, default=600.0, help="streaming phase limit (s)")
    demo.set_defaults(handler="fleet.cli_handlers:run_demo")

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
