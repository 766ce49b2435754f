"""The model's own limit: LiteRT ``invoke()`` in a loop, ``python -m bench.raw``.

Inputs are the same frames the agent gets, decoded and preprocessed beforehand (and
quantized for an int8 input), so the loop times exactly set-input, invoke, copy-output: what
no agent can beat on the same core and threads. Prints one JSON line:
``{"batch": {"1": {"per_s": ..., "invoke_ms_p50": ...}, "32": {...}}, "best_per_s": ...}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from stream.preprocessing import quantize


def _interpreter(model_path: str, threads: int) -> Any:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=model_path, num_threads=threads)


def measure(
    model_path: str, x: np.ndarray, *, threads: int, batch: int, seconds: float
) -> dict[str, float]:
    """Samples per second of invoke() at ``batch`` over ``seconds`` (after a warm-up)."""
    interp = _interpreter(model_path, threads)
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    if batch != int(inp["shape"][0]):
        interp.resize_tensor_input(inp["index"], [batch, *[int(d) for d in inp["shape"][1:]]])
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    data = x
    if np.dtype(inp["dtype"]) != np.float32:
        scale, zero = inp["quantization"]
        data = quantize(x, float(scale), int(zero), np.dtype(inp["dtype"]).name)
    n_batches = max(len(data) // batch, 1)
    batches = [np.ascontiguousarray(data[i * batch : (i + 1) * batch]) for i in range(n_batches)]
    batches = [b for b in batches if len(b) == batch] or [np.repeat(data[:1], batch, axis=0)]
    for b in batches[:3]:  # warm-up: XNNPACK packs weights on the first invoke
        interp.set_tensor(inp["index"], b)
        interp.invoke()
    durations: list[float] = []
    done = 0
    started = time.perf_counter()
    i = 0
    while time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        interp.set_tensor(inp["index"], batches[i % len(batches)])
        interp.invoke()
        interp.get_tensor(out["index"]).copy()
        durations.append(time.perf_counter() - t0)
        done += batch
        i += 1
    elapsed = time.perf_counter() - started
    arr = np.asarray(durations) * 1000.0
    return {
        "per_s": done / elapsed,
        "invoke_ms_p50": float(np.percentile(arr, 50)),
        "invoke_ms_p99": float(np.percentile(arr, 99)),
        "invokes": len(durations),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.raw")
    p.add_argument("--model", required=True)
    p.add_argument("--inputs", required=True, help=".npy of preprocessed float32 inputs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batches", default="1", help="comma-separated batch sizes")
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args(argv)
    x = np.load(args.inputs).astype(np.float32)
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
