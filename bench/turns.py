"""The agent and raw LiteRT in turns on one core: the model-bound ratio's measurement.

The 2-core VM this project runs on changes speed within seconds (raw LiteRT's one-second
rates: 312-504 frames/s with nothing else running), so runs taken one after the other
(raw, agent, raw, ...) compare different machines: two runs of one commit gave agent /
raw 0.938 and 0.850. Here the contenders share the measured core in turns of
``BenchConfig.turn_s``: the agent, raw LiteRT at batch 1, raw LiteRT at the agent's max
batch, the agent, ... Only the one whose turn it is runs (the others are stopped with
SIGSTOP, whole process groups), so each sees the same stretch of the machine's ups and
downs, sliced finely. Work is conserved: a stopped batch finishes in the next turn.

The agent's rate counts its results by their ``produced_at`` within its turns; raw
LiteRT counts its frames in a shared 8-byte file (``python -m bench.raw --counter``).
Arithmetic: :func:`bench.stats.turn_rates` (unit-tested).
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.exceptions import BenchError
from bench.harness import AgentChild, Harness, Topics
from bench.kafka_io import ResultsReader, preload
from bench.messages import Message
from bench.procs import Child, python_command
from bench.raw import read_counter
from bench.stats import Turn, ratio, rounded, turn_rates


def _signal(child: Child, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)


def _raw_counter(
    h: Harness, model: Path, inputs: Path, batch: int, label: str
) -> tuple[Child, Path]:
    """Start raw LiteRT counting into a file; returns once warmed up, stopped.

    The file is in memory (/dev/shm) where there is one: on a disk, the loop's write to a
    page that writeback has just cleaned can wait for the disk, a turn's worth of time
    while other work writes (the caller removes it)."""
    shm = Path("/dev/shm")  # noqa: S108  mkstemp below: O_EXCL, mode 0600
    folder = shm if shm.is_dir() and os.access(shm, os.W_OK) else h.logs
    fd, name = tempfile.mkstemp(prefix=f"edgeinfer-{label}-", suffix=".count", dir=folder)
    with os.fdopen(fd, "wb") as f:
        f.write(bytes(8))
    counter = Path(name)
    child = Child(
        name=label,
        cmd=python_command(
            "bench.raw",
            "--model",
            str(model),
            "--inputs",
            str(inputs),
            "--threads",
            str(h.config.threads),
            "--batches",
            str(batch),
            "--counter",
            str(counter),
        ),
        log_path=h.logs / f"{label}.log",
        cpus=[h.cpu],
    ).start()
    deadline = time.monotonic() + 120.0
    try:
        while read_counter(str(counter)) == 0:
            child.check_alive()
            if time.monotonic() > deadline:
                msg = f"{label}: no frame counted within 120 s"
                raise BenchError(msg)
            time.sleep(0.05)
    except BaseException:
        child.stop()
        counter.unlink(missing_ok=True)
        raise
    _signal(child, signal.SIGSTOP)
    return child, counter


def agent_vs_raw_in_turns(
    h: Harness,
    *,
    label: str,
    prefix: str,
    messages: list[Message],
    start: Callable[[Topics], AgentChild],
    model: Path,
    inputs: Path,
) -> dict[str, Any]:
    """One run: the agent (``start``) on ``messages`` and raw LiteRT on ``model`` in turns.

    Returns the rates (``agent_per_s``, ``raw_per_s`` by batch, ``raw_best_per_s``), their
    ratio, the turns counted, and the agent's cold start.
    """
    c = h.config
    topics = h.topics(prefix)
    preload(h.settings, topics.input, messages)
    raws: dict[int, tuple[Child, Path]] = {}
    agent: AgentChild | None = None
    turns: list[Turn] = []
    try:
        for batch in sorted({1, c.max_batch}):
            raws[batch] = _raw_counter(h, model, inputs, batch, f"{prefix}-raw-b{batch}")
        with ResultsReader(h.settings, topics.output) as reader:
            agent = start(topics)
            cold, _ = agent.wait_ready()
            # Running on its own until its first batches are out: group joined, fetching.
            reader.wait_for(
                min(2 * c.max_batch, len(messages)),
                cap_s=c.measure_cap_s,
                check=agent.child.check_alive,
                label=label,
            )
            order: list[tuple[str, Child, Path | None]] = [("agent", agent.child, None)]
            order += [(f"raw_b{b}", child, path) for b, (child, path) in raws.items()]
            deadline = time.monotonic() + 3 * c.measure_cap_s + 60.0
            next_report = time.monotonic() + 5.0
            while reader.count < len(messages):
                if time.monotonic() > deadline:
                    msg = f"{label}: {reader.count}/{len(messages)} results by the deadline"
                    raise BenchError(msg)
                for who, child, path in order:
                    before = read_counter(str(path)) if path else 0
                    _signal(child, signal.SIGCONT)
                    t0 = time.time()
                    end = time.monotonic() + c.turn_s
                    while (left := end - time.monotonic()) > 0:
                        reader.poll(timeout_ms=max(1, int(left * 1000)))
                    _signal(child, signal.SIGSTOP)
                    t1 = time.time()
                    child.check_alive()
                    after = read_counter(str(path)) if path else 0
                    turns.append(Turn(who, t0, t1, before, after))
                if time.monotonic() >= next_report:
                    next_report = time.monotonic() + 5.0
                    h.progress(f"{label}: {reader.count}/{len(messages)} results, in turns")
            times = reader.times()
    finally:
        for child, path in raws.values():
            _signal(child, signal.SIGCONT)
            child.stop()
            path.unlink(missing_ok=True)
        if agent is not None:
            _signal(agent.child, signal.SIGCONT)
            agent.child.stop()
    try:
        rates = turn_rates(turns, times)
    except ValueError as exc:
        msg = f"{label}: {exc}"
        raise BenchError(msg) from exc
    raw = {str(b): rates.get(f"raw_b{b}") for b in raws}
    best = max((v for v in raw.values() if v), default=None)
    agent_rate = rates["agent"]
    out = {
        "label": label,
        "agent_per_s": rounded(agent_rate, 1),
        "raw_per_s": {b: rounded(v, 1) for b, v in raw.items()},
        "raw_best_per_s": rounded(best, 1),
        "ratio": rounded(ratio(agent_rate, best), 4),
        "turn_s": c.turn_s,
        "agent_turns": rates["agent_turns"],
        "agent_seconds": rates["agent_seconds"],
        "agent_results_counted": rates["agent_results"],
        "cold_start_s": rounded(cold, 3),
    }
    h.progress(
        f"{label}: agent {agent_rate:,.1f}/s, raw best {best or 0:,.1f}/s -> "
        f"{out['ratio']} ({rates['agent_turns']} agent turns of {c.turn_s} s)"
    )
    return out
