"""Handlers of ``edgeinfer demo`` and ``edgeinfer top``."""

from __future__ import annotations

import argparse
from pathlib import Path


def run_demo(args: argparse.Namespace) -> int:
    from fleet.demo import DemoConfig, DemoInterrupted, run_demo_config

    if args.scenario == "drift":
        return _drift(args)
    try:
        summary = run_demo_config(
            DemoConfig(
                workdir=Path(args.workdir or "runs/demo"),
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


def _drift(args: argparse.Namespace) -> int:
    from fleet.demo import DemoInterrupted
    from fleet.drift_demo import DriftConfig, run_drift_demo

    try:
        summary = run_drift_demo(
            DriftConfig(
                workdir=Path(args.workdir or "runs/demo-drift"),
                agents=args.agents_per_model,
                rate=args.image_rate,
                undrifted_s=args.undrifted_s,
                drift=args.drift,
                drift_devices=args.drift_devices,
                retrain_samples=args.retrain_samples,
                retrain=args.retrain,
                timeout_s=args.timeout + args.undrifted_s,
            )
        )
    except DemoInterrupted as exc:
        print(f"[demo] {exc}")
        return 130
    return 0 if summary["promoted_version"] is not None else 1


def run_top(args: argparse.Namespace) -> int:
    from fleet.top import run_top as loop

    urls = [u.strip() for u in args.agents.split(",") if u.strip()]
    loop(urls, interval_s=args.interval, iterations=args.iterations)
    return 0
