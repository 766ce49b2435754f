"""Profiles for the goals a run missed: where the agent's time goes (py-spy).

* A throughput goal missed: the agent (and, for client-bound cases, the passthrough loop)
  is sampled by py-spy for a few seconds of steady state on the same preloaded input.
* The cold-start goal missed: py-spy starts the agent itself and samples its main thread
  (idle time included) until it is ready; the samples are split into start-up phases.
* Peak RSS and scale-out are explained from data the cases already recorded (largest
  memory mappings; CPU seconds of every process), not from a profile.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.assets import digits_images, digits_models, frames, mobilenet_models, sensor_models
from bench.cases.throughput import (
    LOOP_MODES,
    agent_starter,
    clients,
    loop_starter,
    sensor_messages,
)
from bench.harness import AgentChild, Harness, Topics, _slug
from bench.kafka_io import ResultsReader, preload
from bench.messages import Message, jpeg_messages, png_messages
from bench.procs import Child
from bench.profile import (
    py_spy,
    record_command,
    speedscope_main_thread,
    summarize,
    summarize_threads,
)

logger = logging.getLogger(__name__)

#: Samples per second asked of py-spy.
RATE = 200


def run(h: Harness, goals: list[dict[str, Any]]) -> dict[str, Any]:
    """Profile each missed goal once; returns ``{goal key: profile summary}``."""
    # Raw samples of an earlier run in the same folder would sit beside this run's README
    # as if they were its own.
    for stale in (h.out / "profiles").glob("*.txt"):
        stale.unlink()
    missed = [g["key"] for g in goals if g["met"] is False]
    if not missed or h.config.profile_seconds <= 0:
        return {}
    if py_spy() is None:
        note = "py-spy is not installed (pip install py-spy, in edgeinfer[dev]): no profile taken"
        h.progress(note)
        return {k: {"error": note} for k in missed}
    out: dict[str, Any] = {}
    done: dict[str, Any] = {}
    for key in missed:
        try:
            spec = _spec(h, key)
            if spec is None:
                continue
            name, fn = spec
            if name not in done:
                h.progress(f"profiling for the missed goal {key}: {name}")
                done[name] = fn()
            out[key] = done[name]
        except Exception as exc:  # noqa: BLE001  a profile is a bonus: never lose the results
            logger.exception("profile for %s failed", key)
            out[key] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def _spec(h: Harness, key: str) -> tuple[str, Callable[[], Any]] | None:
    if key.startswith("agent_vs_raw_mobilenet_"):
        variant = key.rsplit("_", 1)[1]
        bundle = mobilenet_models(h).bundles[variant]
        per_s = h.summary.get(f"mobilenet_{variant}_agent_per_s") or 200.0
        msgs = jpeg_messages(frames(), _count(h, per_s))
        return f"mobilenet-{variant}", lambda: {
            "agent": steady(
                h,
                label=f"agent mobilenet {variant}",
                start=agent_starter(h, f"profile-agent-mobilenet-{variant}", bundle),
                messages=msgs,
            )
        }
    if key in ("agent_vs_passthrough_digits",):
        bundle = digits_models(h).bundles["float32"]
        rate = _measured_rate(h, "client_bound", "digits")
        msgs = png_messages(digits_images(), _count(h, rate))
        return "digits", lambda: _pair(h, "digits", bundle, msgs)
    if key in ("agent_vs_passthrough_sensor", "agent_vs_naive_sensor"):
        bundle = sensor_models(h).bundles["float32"]
        rate = _measured_rate(h, "client_bound", "sensor")
        msgs, _expected = sensor_messages(bundle, _count(h, rate))
        return "sensor", lambda: _pair(h, "sensor", bundle, msgs)
    if key == "cold_start_s":
        bundle = mobilenet_models(h).bundles["int8"]
        cold = h.summary.get("cold_start_s") or 5.0
        return "cold-start", lambda: cold_start(h, bundle, seconds=float(cold))
    return None


def _measured_rate(h: Harness, case: str, name: str) -> float:
    try:
        return float(h.details[case][name]["agent"]["per_s"]) or 2000.0
    except (KeyError, TypeError, ValueError):
        return 2000.0


def _count(h: Harness, per_s: float) -> int:
    """Enough messages to keep the agent busy through start-up and the sampling window."""
    return int(min(max(per_s * (h.config.profile_seconds + 8), 500), 150_000))


def _pair(h: Harness, name: str, bundle: Path, msgs: list[Message]) -> dict[str, Any]:
    return {
        "agent": steady(
            h,
            label=f"agent {name}",
            start=agent_starter(h, f"profile-agent-{name}", bundle),
            messages=msgs,
        ),
        "passthrough": steady(
            h,
            label=f"passthrough {name}",
            # The passthrough on the client the agent runs on by default (as the ratio's).
            start=loop_starter(
                h, f"profile-passthrough-{name}", LOOP_MODES[clients()[0]], bundle=bundle
            ),
            messages=msgs,
        ),
    }


def steady(
    h: Harness,
    *,
    label: str,
    start: Callable[[Topics], Child | AgentChild],
    messages: list[Message],
) -> dict[str, Any]:
    """py-spy samples (CPU only) of a contender working through a preloaded backlog."""
    seconds = h.config.profile_seconds
    topics = h.topics(f"profile-{_slug(label)}")
    preload(h.settings, topics.input, messages)
    path = h.out / "profiles" / f"{_slug(label)}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with ResultsReader(h.settings, topics.output) as reader:
        handle = start(topics)
        child = handle.child if isinstance(handle, AgentChild) else handle
        try:
            if isinstance(handle, AgentChild):
                handle.wait_ready()
            deadline = time.monotonic() + 120
            while reader.count == 0 and time.monotonic() < deadline:
                child.check_alive()
                reader.poll(timeout_ms=100)
            pid = child.pid
            spy = Child(
                name=f"py-spy {label}",
                cmd=record_command(
                    pid=child.pid, output=path, seconds=seconds, idle=False, threads=True, rate=RATE
                ),
                log_path=h.logs / f"py-spy-{_slug(label)}.log",
                cpus=h.other_cpus,
            ).start()
            assert spy.proc is not None
            spy.proc.wait(timeout=seconds + 60)
            spy.stop()
            processed = reader.count
        finally:
            child.stop()
    main, others = summarize_threads(path, pid)
    h.progress(f"profile {label}: main thread {main.by_category.most_common(3)}")
    return {
        "label": f"{label}: main thread (the pipeline)",
        "raw_file": str(path.relative_to(h.out)),
        "seconds": seconds,
        "busy_share": round(main.samples / (seconds * RATE), 3),
        "results_when_done": processed,
        **main.as_dict(),
        "other_threads": {
            "samples": others.samples,
            "note": "kafka-python's I/O and heartbeat threads, the health server; py-spy counts "
            "their select() waits as active",
            "top_self": others.as_dict(top=5)["top_self"],
        },
    }


def cold_start(h: Harness, bundle: Path, *, seconds: float) -> dict[str, Any]:
    """py-spy runs the agent and samples its main thread, idle included, until it is ready."""
    topics = h.topics("profile-cold-start")
    path = h.out / "profiles" / "agent-cold-start.speedscope.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    duration = math.ceil(seconds * 1.5 + 1)
    wrap = [
        *record_command(
            pid=None, output=path, seconds=duration, idle=True, rate=RATE, fmt="speedscope"
        ),
        "--",
    ]
    agent = h.agent(name="profile-agent-cold-start", bundle=bundle, topics=topics, wrap=wrap)
    assert agent.child.proc is not None
    try:
        ready_s, first_http = agent.wait_ready(timeout_s=duration + 60)
        agent.child.proc.wait(timeout=duration + 60)
    finally:
        agent.child.stop()
    prof = summarize(speedscope_main_thread(path, until_s=ready_s), phases=True)
    h.progress(
        f"profile cold start: ready after {ready_s:.2f} s; phases {prof.by_category.most_common(4)}"
    )
    return {
        "label": "agent cold start (main thread, idle included)",
        "raw_file": str(path.relative_to(h.out)),
        "ready_s_under_py_spy": round(ready_s, 3),
        "first_http_answer_s": None if first_http is None else round(first_http, 3),
        "sampled_s": duration,
        **prof.as_dict(),
    }
