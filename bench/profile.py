"""Where the agent's time goes: py-spy samples of the running agent, summarized.

py-spy (``pip install py-spy``, in the ``dev`` extra) samples a process from outside, all
threads, without changing its code. Its ``raw`` output is one collapsed stack per line,
root first: ``frame;frame;...;leaf COUNT`` with frames ``function (file:line)``.
:func:`summarize` turns that into shares per category (LiteRT invoke, Kafka client,
decoding, ...) and the top functions by self time.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Categories, most specific first: a sample is charged to the innermost frame that matches.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("LiteRT invoke", ("ai_edge_litert", "tflite_runtime", "interpreter.py")),
    ("image decode (PIL)", ("PIL/",)),
    ("JSON encode/decode", ("json/",)),
    ("wire codecs (stream.codecs)", ("stream/codecs.py", "stream/schemas.py")),
    ("preprocessing / numpy", ("stream/preprocessing.py", "numpy/", "edge_agent/inputs.py")),
    ("sensor windows", ("edge_agent/windows.py",)),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("kafka-python: compression/crc", ("kafka/codec.py", "crc32c", "lz4", "kafka/record/")),
    ("kafka-python: producer", ("kafka/producer/",)),
    ("kafka-python: consumer", ("kafka/consumer/", "kafka/coordinator/")),
    ("kafka-python: network/protocol", ("kafka/client_async.py", "kafka/conn.py", "kafka/protocol/", "kafka/net/", "selectors.py", "socket.py", "ssl.py")),
    ("kafka-python: other", ("kafka/",)),
    ("agent pipeline", ("edge_agent/",)),
    ("imports / start-up", ("<frozen importlib", "importlib/")),
    ("threading / waits", ("threading.py", "queue.py")),
)
OTHER = "other"
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")


def py_spy() -> str | None:
    """The py-spy executable next to this Python, or on PATH; None if not installed."""
    import sys

    here = Path(sys.executable).parent / "py-spy"
    if here.is_file():
        return str(here)
    return shutil.which("py-spy")


def record_command(*, pid: int | None, output: Path, seconds: float, idle: bool, rate: int = 200) -> list[str]:
    exe = py_spy()
    if exe is None:
        msg = "py-spy is not installed: pip install py-spy (it is in edgeinfer[dev])"
        raise FileNotFoundError(msg)
    cmd = [exe, "record", "--format", "raw", "--output", str(output), "--rate", str(rate), "--duration", str(max(int(seconds), 1))]
    if idle:
        cmd.append("--idle")
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


def category_of(frames: list[str]) -> str:
    for frame in reversed(frames):  # innermost first
        for name, needles in CATEGORIES:
            if any(n in frame for n in needles):
                return name
    return OTHER


def _function(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (file.py)`` (lines merged)."""
    m = re.match(r"^(?P<fn>.*?) \((?P<file>.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame
    file = m.group("file")
    parts = file.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else file
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
                {"category": k, "share": round(v / total, 4)} for k, v in self.by_category.most_common()
            ],
            "top_self": [
                {"function": k, "share": round(v / total, 4)} for k, v in self.self_time.most_common(top)
            ],
            "top_inclusive": [
                {"function": k, "share": round(v / total, 4)} for k, v in self.inclusive.most_common(top)
            ],
        }


def summarize(stacks: list[tuple[list[str], int]]) -> Profile:
    prof = Profile()
    for frames, count in stacks:
        if not frames:
            continue
        prof.samples += count
        prof.by_category[category_of(frames)] += count
        prof.self_time[_function(frames[-1])] += count
        for fn in {_function(f) for f in frames}:
            prof.inclusive[fn] += count
    return prof


def summarize_file(path: Path) -> Profile:
    with path.open() as fh:
        return summarize(parse_raw(fh))
