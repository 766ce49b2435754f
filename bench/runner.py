"""``edgeinfer bench``: start a broker, run the cases, judge the goals, profile misses, report."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.cases import (
    decoding,
    footprint,
    latency,
    monitoring,
    profiling,
    quantization,
    scale_out,
    throughput,
)
from bench.config import BenchConfig, Case, parse_cases
from bench.exceptions import BenchError
from bench.harness import Harness
from bench.procs import allowed_cpus
from bench.report import build_summary, console_table, write
from bench.stats import judge_goals
from stream.broker import EmbeddedBroker
from stream.exceptions import EdgeInferError
from stream.settings import KafkaSettings

logger = logging.getLogger(__name__)


def _progress(started: float) -> Callable[[str], None]:
    def report(text: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {text}", flush=True)

    return report


def _cases(args: argparse.Namespace) -> dict[Case, Callable[[Harness], None]]:
    reports = [Path(p) for p in args.report]
    return {
        "model_bound": throughput.model_bound,
        "client_bound": throughput.client_bound,
        "naive": throughput.naive,
        "client_library": throughput.client_library,
        "latency": latency.run,
        "footprint": footprint.run,
        "scale_out": scale_out.run,
        "quantization": lambda h: quantization.run(h, reports),
        "monitoring": monitoring.run,
        "decoding": decoding.run,
    }


def _meta(
    args: argparse.Namespace, config: BenchConfig, cpu: int, others: list[int]
) -> dict[str, Any]:
    versions = {}
    for dist in (
        "edgeinfer",
        "ai-edge-litert",
        "tensorflow",
        "keras",
        "kafka-python",
        "confluent-kafka",
        "numpy",
    ):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    argv = ["edgeinfer", "bench", *(["--quick"] if args.quick else []), "--out", str(args.out)]
    if args.only:
        argv += ["--only", args.only]
    return {
        "command": shlex.join(argv),
        "quick": config.quick,
        "cpu_model": _cpu_model(),
        "cpus": len(allowed_cpus()),
        "measured_cpu": cpu,
        "background_cpus": others,
        "python": sys.version.split()[0],
        "versions": versions,
        "git_commit": _git_commit(),
        "threads": config.threads,
        "max_batch": config.max_batch,
        "max_latency_ms": config.max_latency_ms,
        "config": {k: v for k, v in config.__dict__.items() if k != "cases"},
        "cases": list(config.cases),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def run_bench(args: argparse.Namespace) -> int:
    config = BenchConfig.quick_preset() if args.quick else BenchConfig.full()
    try:
        config = config.only(parse_cases(args.only))
    except ValueError as exc:
        raise BenchError(str(exc)) from exc
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for noisy in ("stream.kafka", "stream.broker"):  # topic creation and broker start-up lines
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    # kafka-python 3 warns when this (busy, pinned) process blocks its I/O loop: not news here.
    logging.getLogger("kafka").setLevel(logging.ERROR)
    cpus = allowed_cpus()
    cpu = cpus[-1] if args.cpu is None else int(args.cpu)
    if cpu not in cpus:
        msg = f"--cpu {cpu} is not one of the cores this process may use ({cpus})"
        raise BenchError(msg)
    others = [c for c in cpus if c != cpu] or [cpu]
    started = time.perf_counter()
    progress = _progress(started)
    meta = _meta(args, config, cpu, others)
    meta["started_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    meta["load_start"] = os.getloadavg()[0]
    mode = "quick" if config.quick else "full"
    progress(
        f"edgeinfer bench ({mode}): cases {', '.join(config.cases)}; "
        f"measured core {cpu}, background {others}"
    )
    (out / "logs").mkdir(parents=True, exist_ok=True)
    ignore = out / ".gitignore"
    if not ignore.exists():  # models and logs are rebuilt on demand: keep them out of git
        ignore.write_text("cache/\nlogs/\n")
    profiles: dict[str, Any] = {}
    with EmbeddedBroker(log_path=out / "logs" / "broker.log") as broker:
        h = Harness(
            config=config,
            out=out,
            settings=KafkaSettings(bootstrap_servers=broker.bootstrap),
            cpu=cpu,
            other_cpus=others,
            progress=progress,
            broker_pid=broker.pid,
            all_cpus=cpus,
        )
        progress(f"broker up on {broker.bootstrap}")
        h.pin_background(others)
        try:
            funcs = _cases(args)
            for case in config.cases:
                progress(f"== {case}")
                t0 = time.perf_counter()
                try:
                    funcs[case](h)
                except (EdgeInferError, OSError, subprocess.SubprocessError) as exc:
                    logger.debug("case %s failed", case, exc_info=True)
                    h.errors[case] = f"{type(exc).__name__}: {exc}"
                    progress(
                        f"case {case} FAILED: "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                    )
                progress(f"== {case} done in {time.perf_counter() - t0:.0f} s")
            goals = judge_goals(h.summary, h.spreads)
            profiles = profiling.run(h, goals)
        finally:
            h.pin_background(None)
    meta["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    meta["duration_s"] = round(time.perf_counter() - started, 1)
    meta["load_end"] = os.getloadavg()[0]
    summary = build_summary(
        meta=meta,
        summary=h.summary,
        goals=goals,
        errors=h.errors,
        profiles=profiles,
        spreads=h.spreads,
    )
    readme = write(out, summary, h.details, profiles)
    print()
    print(console_table(summary))
    print()
    print(f"wrote {out / 'summary.json'} and {readme} in {meta['duration_s']:.0f} s")
    if h.errors:
        print(f"cases that failed: {', '.join(h.errors)} (see {readme})", file=sys.stderr)
        return 1
    return 0
