"""The model-bound measurement: the agent and raw LiteRT take turns on one core.

A real agent on the embedded broker and two real raw LiteRT loops (batch 1 and the max
batch) share one core in short turns (``bench/turns.py``); each gets a rate, nothing is
left stopped or running afterwards, and the agent's work during the turns is what it
answered.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.cases.throughput import agent_starter
from bench.config import BenchConfig
from bench.harness import Harness
from bench.messages import png_messages
from bench.stats import ratio
from bench.turns import agent_vs_raw_in_turns
from stream.bundle import MODEL_FILE
from stream.settings import KafkaSettings

pytestmark = pytest.mark.integration


def _children_of(pid: int) -> list[tuple[int, str, str]]:
    """(pid, state, command line) of every process whose parent is ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            out.append((int(entry), fields[0], cmd))
    return out


def test_agent_and_raw_litert_take_turns_on_one_core(
    kafka_settings: KafkaSettings, tiny_bundle: Any, tmp_path: Path
) -> None:
    bundle = tiny_bundle("image")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(64, 8, 8, 1), dtype=np.uint8)
    inputs = tmp_path / "inputs.npy"
    np.save(inputs, pixels.astype(np.float32) / 255.0)
    messages = png_messages(pixels, 4000)
    config = dataclasses.replace(BenchConfig.quick_preset(), turn_s=0.1, max_batch=32)
    cpu = max(os.sched_getaffinity(0))
    h = Harness(
        config=config,
        out=tmp_path / "bench",
        settings=kafka_settings,
        cpu=cpu,
        other_cpus=[],
        progress=lambda _line: None,
    )
    h.logs.mkdir(parents=True)

    run = agent_vs_raw_in_turns(
        h,
        label="tiny image",
        prefix="turns-tiny",
        messages=messages,
        start=agent_starter(h, "agent-turns-tiny", bundle),
        model=bundle / MODEL_FILE,
        inputs=inputs,
    )

    assert run["agent_turns"] >= 2
    assert run["turn_s"] == 0.1
    # The agent's turns were ~0.1 s each (a stopped process cannot run over its turn).
    assert 0.09 * run["agent_turns"] <= run["agent_seconds"] <= 0.5 * run["agent_turns"]
    assert 0 < run["agent_results_counted"] <= len(messages)
    assert run["agent_per_s"] == pytest.approx(
        run["agent_results_counted"] / run["agent_seconds"], rel=0.01
    )
    assert set(run["raw_per_s"]) == {"1", "32"}
    assert all(v is not None and v > 0 for v in run["raw_per_s"].values()), run
    assert run["raw_best_per_s"] == max(run["raw_per_s"].values())
    # (rounded to 4 digits: the tiny model is client-bound, its raw loop ~1000x faster)
    expected = ratio(run["agent_per_s"], run["raw_best_per_s"])
    assert run["ratio"] == pytest.approx(expected, rel=0.01, abs=5e-5)
    assert run["cold_start_s"] is not None and run["cold_start_s"] > 0
    # Nothing is left behind: no contender stopped (T) or still running (the broker of
    # the test session is a child too).
    contenders = [c for c in _children_of(os.getpid()) if "bench.raw" in c[2] or "agent" in c[2]]
    assert [c for c in contenders if c[1] != "Z"] == []
    # The raw loops' counter files are gone, their logs kept.
    for batch in ("1", "32"):
        assert (h.logs / f"turns-tiny-raw-b{batch}.log").is_file()
        assert not list(Path("/dev/shm").glob(f"edgeinfer-turns-tiny-raw-b{batch}-*"))
        assert not list(h.logs.glob("*.count"))
