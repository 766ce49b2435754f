"""Where the agent's time goes: py-spy samples of the running agent, summarized.

py-spy (``pip install py-spy``, in the ``dev`` extra) samples a process from outside, all
threads, without changing its code. Its ``raw`` output is one collapsed stack per line,
root first: ``frame;frame;...;leaf COUNT`` with frames ``function (file:line)``.
:func:`summarize` turns that into shares per category (LiteRT invoke, Kafka client,
decoding, ...) and the top functions by self time.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Categories, most specific first: a sample is charged to the innermost frame that matches.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("waiting in select() (network I/O, idle)", ("selectors.py", "select.select")),
    ("sleeping / waiting on a lock", ("time.sleep", "Condition.wait", "Event.wait")),
    ("LiteRT invoke", ("ai_edge_litert", "tflite_runtime", "interpreter.py")),
    ("image decode (PIL)", ("PIL/",)),
    ("JSON encode/decode", ("json/",)),
    ("wire codecs (stream.codecs)", ("stream/codecs/", "stream/schemas.py")),
    ("preprocessing / numpy", ("stream/preprocessing.py", "numpy/", "edge_agent/inputs.py")),
    ("sensor windows", ("edge_agent/windows.py",)),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("kafka-python: compression/crc", ("kafka/codec.py", "crc32c", "lz4", "kafka/record/")),
    ("kafka-python: producer", ("kafka/producer/",)),
    ("kafka-python: consumer", ("kafka/consumer/", "kafka/coordinator/")),
    (
        "kafka-python: network/protocol",
        (
            "kafka/client_async.py",
            "kafka/conn.py",
            "kafka/protocol/",
            "kafka/net/",
            "socket.py",
            "ssl.py",
        ),
    ),
    ("kafka-python: other", ("kafka/",)),
    ("agent pipeline", ("edge_agent/",)),
    ("imports / start-up", ("<frozen importlib", "importlib/")),
    ("threading / waits", ("threading.py", "queue.py")),
)
#: Cold-start phases: a sample belongs to the first phase any of its frames matches.
PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("imports", ("<frozen importlib", "importlib/")),
    ("consumer group join (kafka coordinator)", ("kafka/coordinator/",)),
    (
        "model load + first invoke (LiteRT)",
        (
            "ai_edge_litert",
            "edge_agent/runtime.py",
            "edge_agent/model_store.py",
            "edge_agent/sources.py",
            "edge_agent/probe/",
            "_load_initial",
            "stream/bundle.py",
        ),
    ),
    ("Kafka connect / metadata / producer", ("kafka/",)),
    (
        "health server, metrics",
        ("prometheus_client", "http/server.py", "socketserver.py", "edge_agent/health.py"),
    ),
    (
        "configuration, CLI",
        ("argparse.py", "edge_agent/config.py", "stream/settings.py", "stream/cli.py"),
    ),
)
OTHER = "other"
_THREAD = re.compile(r"^thread \((?P<tid>\d+)\)")
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")


def py_spy() -> str | None:
    """The py-spy executable next to this Python, or on PATH; None if not installed."""
    import sys

    here = Path(sys.executable).parent / "py-spy"
    if here.is_file():
        return str(here)
    return shutil.which("py-spy")


def record_command(
    *,
    pid: int | None,
    output: Path,
    seconds: float,
    idle: bool,
    threads: bool = False,
    rate: int = 200,
    fmt: str = "raw",
) -> list[str]:
    exe = py_spy()
    if exe is None:
        msg = "py-spy is not installed: pip install py-spy (it is in edgeinfer[dev])"
        raise FileNotFoundError(msg)
    cmd = [
        exe,
        "record",
        "--format",
        fmt,
        "--output",
        str(output),
        "--rate",
        str(rate),
        "--duration",
        str(max(int(seconds), 1)),
    ]
    if idle:
        cmd.append("--idle")
    if threads:
        cmd.append("--threads")
    if pid is not None:
        cmd += ["--pid", str(pid)]
    return cmd


def parse_raw(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    """``[(frames root..leaf, count)]`` from py-spy raw (collapsed) output."""
    out = []
    for line in lines:
        m = _LINE.match(line.rstrip("\n"))
        if not m:
            continue
        out.append((m.group("stack").split(";"), int(m.group("count"))))
    return out


def split_threads(
    stacks: list[tuple[list[str], int]], main_tid: int
) -> tuple[list[tuple[list[str], int]], list[tuple[list[str], int]]]:
    """(main thread, other threads) of ``py-spy record --threads`` stacks, root frame dropped."""
    main, others = [], []
    for frames, count in stacks:
        m = _THREAD.match(frames[0]) if frames else None
        if m is None:
            others.append((frames, count))
        elif int(m.group("tid")) == main_tid:
            main.append((frames[1:], count))
        else:
            others.append((frames[1:], count))
    return main, others


def category_of(frames: list[str]) -> str:
    """The category of the innermost frame that matches one (where the CPU burns)."""
    for frame in reversed(frames):  # innermost first
        for name, needles in CATEGORIES:
            if any(n in frame for n in needles):
                return name
    return OTHER


def phase_of(frames: list[str]) -> str:
    """The first phase (in :data:`PHASES` order) any frame of the stack belongs to."""
    for name, needles in PHASES:
        if any(n in frame for frame in frames for n in needles):
            return name
    return OTHER


def _function(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (to/file.py)`` (lines merged)."""
    m = re.match(r"^(?P<fn>.*?) \((?P<file>.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame
    parts = m.group("file").split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else parts[0]
    return f"{m.group('fn')} ({short})"


@dataclass
class Profile:
    samples: int = 0
    by_category: Counter[str] = field(default_factory=Counter)
    self_time: Counter[str] = field(default_factory=Counter)
    inclusive: Counter[str] = field(default_factory=Counter)

    def as_dict(self, top: int = 12) -> dict[str, Any]:
        total = max(self.samples, 1)
        return {
            "samples": self.samples,
            "by_category": [
                {"category": k, "share": round(v / total, 4)}
                for k, v in self.by_category.most_common()
            ],
            "top_self": [
                {"function": k, "share": round(v / total, 4)}
                for k, v in self.self_time.most_common(top)
            ],
            "top_inclusive": [
                {"function": k, "share": round(v / total, 4)}
                for k, v in self.inclusive.most_common(top)
            ],
        }


def summarize(stacks: list[tuple[list[str], int]], *, phases: bool = False) -> Profile:
    """Shares per category (innermost frame) or per cold-start phase, and top functions."""
    classify = phase_of if phases else category_of
    prof = Profile()
    for frames, count in stacks:
        if not frames:
            continue
        prof.samples += count
        prof.by_category[classify(frames)] += count
        prof.self_time[_function(frames[-1])] += count
        for fn in {_function(f) for f in frames}:
            prof.inclusive[fn] += count
    return prof


def speedscope_main_thread(
    path: Path, *, until_s: float | None = None
) -> list[tuple[list[str], int]]:
    """Stacks of the main thread (lowest thread id) from ``--format speedscope`` output,
    only the samples taken in the first ``until_s`` seconds (samples are in time order)."""
    data = json.loads(path.read_text())
    frames = [
        f"{f.get('name')} ({f.get('file')}:{f.get('line')})" for f in data["shared"]["frames"]
    ]
    profiles = [p for p in data.get("profiles", []) if p.get("type") == "sampled"]
    if not profiles:
        return []

    def tid(p: dict[str, Any]) -> int:
        m = re.search(r"Thread (\d+)", str(p.get("name", "")))
        return int(m.group(1)) if m else 1 << 62

    main = min(profiles, key=tid)
    out: list[tuple[list[str], int]] = []
    elapsed = 0.0
    for sample, weight in zip(main["samples"], main["weights"], strict=False):
        if until_s is not None and elapsed >= until_s:
            break
        elapsed += float(weight)
        out.append(([frames[i] for i in sample], 1))
    return out


def summarize_threads(path: Path, main_tid: int) -> tuple[Profile, Profile]:
    """(main thread, other threads) summaries of a ``--format raw --threads`` file."""
    with path.open() as fh:
        main, others = split_threads(parse_raw(fh), main_tid)
    return summarize(main), summarize(others)
