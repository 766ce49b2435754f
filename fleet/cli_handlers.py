"""Handlers of ``edgeinfer demo`` and ``edgeinfer top``."""

from __future__ import annotations

import argparse
from pathlib import Path


def run_demo(args: argparse.Namespace) -> int:
    from fleet.demo import DemoConfig, DemoInterrupted, run_demo_config

    try:
        summary = run_demo_config(
            DemoConfig(
                workdir=Path(args.workdir),
                agents_per_model=args.agents_per_model,
                sensor_rate=args.sensor_rate,
                image_rate=args.image_rate,
                sensor_repeat=args.sensor_repeat,
                image_repeat=args.image_repeat,
                retrain=args.retrain,
                timeout_s=args.timeout,
            )
        )
    except DemoInterrupted as exc:
        print(f"[demo] {exc}")
        return 130
    lost = summary["lost"]
    return 0 if not any(lost.values()) else 1


def run_top(args: argparse.Namespace) -> int:
    from fleet.top import run_top as loop

    urls = [u.strip() for u in args.agents.split(",") if u.strip()]
    loop(urls, interval_s=args.interval, iterations=args.iterations)
    return 0
