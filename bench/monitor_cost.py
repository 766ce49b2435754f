"""The agent's monitoring cost per input, in-process: ``python -m bench.monitor_cost``.

Times exactly what the pipeline adds per inferred batch when monitoring is on
(:meth:`edge_agent.monitoring.Monitoring.batch`: scores, the confidence histogram, the
per-channel bin counts, the sliding window, and sample capture's choice) and per
housekeeping (:meth:`~edge_agent.monitoring.Monitoring.publish`, every 0.5 s), on the
same raw inputs the agent gets (uint8 images or float32 windows) with the bundle's
reference statistics. Two cases: ``typical`` (model-like outputs, few low-confidence
results, capture at the default rate) and ``flood`` (every result low-confidence: the
capture's rate limit refuses nearly all of them). Sends go to an in-memory stand-in for
the producer (the end-to-end runs of ``edgeinfer bench --only monitoring`` send for real).

Times are the thread's CPU time (``time.thread_time``), so a busy machine inflates them
less than wall time (which is reported too). Prints one JSON line: ``{"typical":
{"runs": [...], "median": .., "wall_us_per_input": {..}}, "flood": {..},
"publish_us": {..}, "batch": 32, "inputs_per_batch": .., "reference": ..}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.stats import spread
from edge_agent.batching import Pending
from edge_agent.monitoring import Monitoring
from edge_agent.sampling import SampleCapture
from stream.bundle import read_manifest


class _Sink:
    """Takes the samples' sends (the producer's place): counts them."""

    def __init__(self) -> None:
        self.sent = 0

    def send(self, *_: Any) -> None:
        self.sent += 1


def _items(x: np.ndarray) -> list[Pending]:
    return [
        Pending(
            x=row,
            device_id=f"dev-{i % 16}",
            partition=0,
            offset=i,
            last_offset=i,
            window=row.dtype != np.uint8,
            ts=1_718_000_000_000 + i,
            kafka_ts=1_718_000_000_000 + i,
            headers=[("content-type", b"image/png")],
            consumed_at=0.0,
            key=b"dev",
            value=b"\x89PNG" + bytes(64),
        )
        for i, row in enumerate(x)
    ]


def _outputs(n: int, classes: int, *, confident: bool, seed: int = 0) -> np.ndarray:
    """Softmax-like rows: mostly sure (``confident``) or all below 0.5."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, classes)) * (6.0 if confident else 0.3)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    out: np.ndarray = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    return out


def measure(
    manifest: Any, x: np.ndarray, *, batch: int, seconds: float, flood: bool
) -> dict[str, Any]:
    """CPU microseconds per input of Monitoring.batch over ``seconds`` (after a warm-up),
    and of one publish."""
    sink = _Sink()
    capture = SampleCapture(
        delivery=sink,  # type: ignore[arg-type]
        metrics=None,
        topic="samples",
        source_topic="input",
        agent_id="bench",
        rate_per_s=0.2,
        burst=10,
        device_per_min=2.0,
        random_share=0.1,
        max_bytes=1 << 20,
        seed=0,
    )
    mon = Monitoring(window=1000, low_confidence=1.0 if flood else 0.5, capture=capture)
    n_batches = max(len(x) // batch, 1)
    batches = []
    for i in range(n_batches):
        xb = np.ascontiguousarray(x[i * batch : (i + 1) * batch])
        if len(xb) < batch:
            xb = np.repeat(x[:1], batch, axis=0)
        batches.append(
            (xb, _items(xb), _outputs(batch, len(manifest.labels), confident=not flood, seed=i))
        )
    ok = np.ones(batch, dtype=bool)
    for xb, items, y in batches[:5]:  # warm-up
        mon.batch(manifest, items, xb, y, ok)
    mon.publish()
    done = 0
    started, cpu0 = time.perf_counter(), time.thread_time()
    i = 0
    while time.perf_counter() - started < seconds:
        xb, items, y = batches[i % len(batches)]
        mon.batch(manifest, items, xb, y, ok)
        done += batch
        i += 1
    elapsed = time.perf_counter() - started
    cpu = time.thread_time() - cpu0
    t0 = time.thread_time()
    rounds = 50
    for _ in range(rounds):
        mon.publish()
    publish_s = (time.thread_time() - t0) / rounds
    if mon.errors:
        msg = f"monitoring failed on {mon.errors} batches"
        raise RuntimeError(msg)
    return {
        # CPU time of this thread: what monitoring takes from the agent's core, whatever
        # else the machine runs (wall time per input is reported next to it).
        "us_per_input": cpu / done * 1e6,
        "wall_us_per_input": elapsed / done * 1e6,
        "publish_us": publish_s * 1e6,
        "inputs": done,
        "samples_sent": sink.sent,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.monitor_cost")
    p.add_argument("--bundle", required=True, type=Path)
    p.add_argument("--inputs", required=True, help=".npy of raw inputs (uint8 images or windows)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seconds", type=float, default=2.0, help="per repeat and case")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    manifest = read_manifest(args.bundle)
    x = np.load(args.inputs)
    out: dict[str, Any] = {
        "batch": args.batch,
        "reference": manifest.reference is not None,
        "input_shape": list(x.shape[1:]),
        "input_dtype": str(x.dtype),
    }
    for case, flood in (("typical", False), ("flood", True)):
        runs = [
            measure(manifest, x, batch=args.batch, seconds=args.seconds, flood=flood)
            for _ in range(args.repeats)
        ]
        out[case] = spread([r["us_per_input"] for r in runs])
        out[case]["wall_us_per_input"] = spread([r["wall_us_per_input"] for r in runs])
        out[case]["samples_sent"] = [r["samples_sent"] for r in runs]
        if case == "typical":
            out["publish_us"] = spread([r["publish_us"] for r in runs])
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
