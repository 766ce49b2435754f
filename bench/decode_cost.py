"""Sensor JSON decoding, orjson against the reference parser: ``python -m bench.decode_cost``.

Decodes the client-bound case's sensor messages (BasicMotions test windows, 100x6, one
chunk per message, ``encode_chunk``'s bytes) with :func:`stream.codecs.decode_sensor_record`
as the agent does, in one process, two ways: the fast path (orjson, when installed) and the
reference rules (the standard library's parser, as on an install without orjson). The two
alternate, each first in turn, ``--rounds`` times; each side decodes the messages for
``--seconds`` of this thread's CPU time per round. Rates are messages per CPU second (a busy
machine inflates wall time more than CPU time; both are reported). Both sides must decode
every message to the same samples, or the run fails.

Prints one JSON line: ``{"fast": {runs, median, min, max, spread}, "reference": {...},
"fast_vs_reference": {...} (per-round ratios), "wall_fast_vs_reference": {...},
"messages", "mean_bytes", "orjson"}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any

import numpy as np

from bench.messages import Message, chunk_messages
from bench.stats import spread
from stream.codecs import decode_sensor_record, fields


@contextmanager
def _side(fast: bool) -> Iterator[None]:
    saved = fields._orjson
    fields._orjson = saved if fast else None
    try:
        yield
    finally:
        fields._orjson = saved


def _decode_all(msgs: list[Message], channels: int) -> list[np.ndarray]:
    return [decode_sensor_record(m.value, m.headers, channels=channels).samples for m in msgs]


def _rate(msgs: list[Message], channels: int, seconds: float) -> tuple[float, float]:
    """Messages per CPU second and per wall second, decoding for ``seconds`` of CPU."""
    done = 0
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    while time.thread_time() - cpu0 < seconds:
        for m in msgs:
            decode_sensor_record(m.value, m.headers, channels=channels)
        done += len(msgs)
    cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    return done / cpu, done / wall


def measure(msgs: list[Message], channels: int, *, seconds: float, rounds: int) -> dict[str, Any]:
    if fields._orjson is None:
        msg = "orjson is not installed: there is no fast path to compare (pip install orjson)"
        raise RuntimeError(msg)
    with _side(True):
        fast_out = _decode_all(msgs, channels)
    with _side(False):
        ref_out = _decode_all(msgs, channels)
    if any(a.tobytes() != b.tobytes() for a, b in zip(fast_out, ref_out, strict=True)):
        msg = "orjson and the reference parser decoded different samples"
        raise RuntimeError(msg)
    rates: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for i in range(rounds):
        for fast in (True, False) if i % 2 == 0 else (False, True):
            with _side(fast):
                rates[fast].append(_rate(msgs, channels, seconds))
    fast_cpu = [r[0] for r in rates[True]]
    ref_cpu = [r[0] for r in rates[False]]
    return {
        "fast": spread(fast_cpu, 1),
        "reference": spread(ref_cpu, 1),
        "fast_vs_reference": spread([f / r for f, r in zip(fast_cpu, ref_cpu, strict=True)]),
        "wall_fast_vs_reference": spread(
            [f[1] / r[1] for f, r in zip(rates[True], rates[False], strict=True)]
        ),
        "us_per_message": {
            "fast": round(1e6 / float(np.median(fast_cpu)), 1),
            "reference": round(1e6 / float(np.median(ref_cpu)), 1),
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.decode_cost")
    p.add_argument("--messages", type=int, default=400, help="distinct messages decoded")
    p.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per side and round")
    p.add_argument("--rounds", type=int, default=5, help="alternations (each side once each)")
    args = p.parse_args(argv)
    from stream.datasets import load_dataset

    windows = load_dataset("basic-motions").x_test
    msgs = chunk_messages(windows, args.messages)
    out = measure(msgs, windows.shape[2], seconds=args.seconds, rounds=args.rounds)
    out.update(
        {
            "messages": len(msgs),
            "mean_bytes": round(sum(len(m.value) for m in msgs) / len(msgs)),
            "shape": list(windows.shape[1:]),
            "orjson": metadata.version("orjson"),
            "seconds": args.seconds,
            "rounds": args.rounds,
        }
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
