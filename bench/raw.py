"""The model's own limit: LiteRT ``invoke()`` in a loop, ``python -m bench.raw``.

Inputs are the same frames the agent gets, decoded and preprocessed beforehand (and
quantized for an int8 input), so the loop times exactly set-input, invoke, copy-output: what
no agent can beat on the same core and threads. Prints one JSON line:
``{"batch": {"1": {"per_s": ..., "invoke_ms_p50": ...}, "32": {...}}, "best_per_s": ...}``.
"""

from __future__ import annotations

import argparse
import json
import mmap
import struct
import sys
import time
from typing import Any

import numpy as np

from stream.preprocessing import quantize


def _interpreter(model_path: str, threads: int) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=model_path, num_threads=threads)


class _Loop:
    """An interpreter at ``batch`` over the inputs' batches, warmed up: :meth:`step` runs
    one set-input, invoke, copy-output."""

    def __init__(self, model_path: str, x: np.ndarray, *, threads: int, batch: int) -> None:
        interp = _interpreter(model_path, threads)
        inp = interp.get_input_details()[0]
        if batch != int(inp["shape"][0]):
            shape = [batch, *[int(d) for d in inp["shape"][1:]]]
            interp.resize_tensor_input(inp["index"], shape)
        interp.allocate_tensors()
        inp = interp.get_input_details()[0]
        data = x
        if np.dtype(inp["dtype"]) != np.float32:
            scale, zero = inp["quantization"]
            data = quantize(x, float(scale), int(zero), np.dtype(inp["dtype"]).name)
        n = max(len(data) // batch, 1)
        batches = [np.ascontiguousarray(data[i * batch : (i + 1) * batch]) for i in range(n)]
        self.batches = [b for b in batches if len(b) == batch] or [
            np.repeat(data[:1], batch, axis=0)
        ]
        self.interp, self.batch, self.i = interp, batch, 0
        self.in_index = inp["index"]
        self.out_index = interp.get_output_details()[0]["index"]
        for b in self.batches[:3]:  # warm-up: XNNPACK packs weights on the first invoke
            interp.set_tensor(self.in_index, b)
            interp.invoke()

    def step(self) -> None:
        self.interp.set_tensor(self.in_index, self.batches[self.i % len(self.batches)])
        self.interp.invoke()
        self.interp.get_tensor(self.out_index).copy()
        self.i += 1


def measure(
    model_path: str, x: np.ndarray, *, threads: int, batch: int, seconds: float
) -> dict[str, float]:
    """Samples per second of invoke() at ``batch`` over ``seconds`` (after a warm-up)."""
    loop = _Loop(model_path, x, threads=threads, batch=batch)
    durations: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        loop.step()
        durations.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    arr = np.asarray(durations) * 1000.0
    return {
        "per_s": len(durations) * batch / elapsed,
        "invoke_ms_p50": float(np.percentile(arr, 50)),
        "invoke_ms_p99": float(np.percentile(arr, 99)),
        "invokes": len(durations),
    }


def count_forever(
    model_path: str, x: np.ndarray, *, threads: int, batch: int, counter: str
) -> None:
    """Invoke at ``batch`` until killed, the frames done so far in ``counter`` (8 bytes,
    little-endian, written after each invoke; 0 until the warm-up is over). The bench
    stops and continues this process to share a core with the agent in turns
    (``bench.turns.agent_vs_raw_in_turns``) and reads the count between turns."""
    loop = _Loop(model_path, x, threads=threads, batch=batch)
    with open(counter, "r+b") as f, mmap.mmap(f.fileno(), 8) as mm:
        done = 0
        while True:
            loop.step()
            done += batch
            struct.pack_into("<Q", mm, 0, done)


def read_counter(path: str) -> int:
    """The frames a :func:`count_forever` process has done (its counter file)."""
    with open(path, "rb") as f:
        data = f.read(8)
    return int(struct.unpack("<Q", data)[0]) if len(data) == 8 else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.raw")
    p.add_argument("--model", required=True)
    p.add_argument("--inputs", required=True, help=".npy of preprocessed float32 inputs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batches", default="1", help="comma-separated batch sizes")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument(
        "--counter",
        help="run the first batch size until killed, counting frames into this 8-byte file",
    )
    args = p.parse_args(argv)
    x = np.load(args.inputs).astype(np.float32)
    if args.counter:
        batch = int(args.batches.split(",")[0])
        count_forever(args.model, x, threads=args.threads, batch=batch, counter=args.counter)
        return 0
    out: dict[str, Any] = {"batch": {}}
    for b in (int(s) for s in args.batches.split(",")):
        out["batch"][str(b)] = measure(
            args.model, x, threads=args.threads, batch=b, seconds=args.seconds
        )
    out["best_per_s"] = max(v["per_s"] for v in out["batch"].values())
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
