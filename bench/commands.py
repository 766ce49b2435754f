"""``edgeinfer bench``: declared here, run by :mod:`bench.runner` (imported only when it runs)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    cases = (
        "model_bound, client_bound, naive, client_library, latency, footprint, scale_out, "
        "quantization, monitoring, decoding"
    )
    p = subparsers.add_parser(
        "bench",
        help="measure the agent against raw LiteRT, a passthrough loop and a naive Keras loop",
        description=(
            "Runs every benchmark case on a fresh embedded broker and writes summary.json, "
            "README.md (tables and plots) and the raw measurements into --out. Ratios are "
            "measured side by side in one run, so a busy machine shifts both sides."
        ),
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="shorter runs and fewer load rates, as many alternations as the full run (a "
        "check in minutes; unstable ratios are marked so)",
    )
    p.add_argument("--out", default="bench/results", help="output folder (default bench/results)")
    p.add_argument(
        "--only", default=None, metavar="CASE,...", help=f"run only these cases: {cases}"
    )
    p.add_argument(
        "--report",
        action="append",
        default=[],
        metavar="REPORT_JSON",
        help="a trainer report.json for the quantization table (repeatable); default: train "
        "digits/cnn and basic-motions/gru once, cached under OUT/cache",
    )
    p.add_argument(
        "--cpu",
        type=int,
        default=None,
        help="the core the measured process is pinned to (default: the last allowed core)",
    )
    p.set_defaults(handler="bench.runner:run_bench")
