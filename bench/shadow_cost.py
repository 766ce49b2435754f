"""What a candidate in shadow costs the serving path, in-process: ``python -m bench.shadow_cost``.

The serving path is timed as the pipeline runs it for every batch: stack the inputs, infer
with the serving model (:func:`edge_agent.answers.infer_batch`), check the outputs, and,
with a shadow, :meth:`edge_agent.shadow.Shadow.offer` (the only thing the serving thread
adds). Between batches the loop waits as the agent waits in its consumer poll, with
:attr:`Shadow.spare` set (the candidate's spare time), so that the serving path is busy
``--load`` of the time (1 = flat out: no spare time, the shadow sheds its inputs). The
worker runs the candidate in those waits, as in the agent, and whatever of its CPU and GIL
use overlaps the next batch shows in the serving path's wall time (the waits are not
counted). Rounds alternate without and with a shadow (each first in turn); per round the
wall time per input of the serving path, and the ratio with/without of that round.

Prints one JSON line: ``{"off_us_per_input": {spread}, "on_us_per_input": {spread},
"ratio": {spread}, "offer_cpu_us_per_input": {spread}, "shadowed_share": {spread}, ...}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from bench.monitor_cost import _items
from bench.stats import median, spread
from edge_agent.answers import infer_batch, input_table
from edge_agent.metrics import AgentMetrics
from edge_agent.model_store import LoadedModel
from edge_agent.outputs import usable_rows
from edge_agent.promotion import Gates
from edge_agent.runtime import load_runtime
from edge_agent.shadow import Shadow
from stream.bundle import verify_bundle


def load(path: Path) -> LoadedModel:
    bundle = verify_bundle(path, require_signature=False)
    m = bundle.manifest
    runtime = load_runtime(
        model_content=bundle.model_bytes(), use_default_delegates=m.use_default_delegates
    )
    return LoadedModel(manifest=m, runtime=runtime, path=path, preprocessing=m.preprocessing)


def serve(
    model: LoadedModel,
    batches: list[tuple[np.ndarray, list[Any]]],
    seconds: float,
    shadow: Any,
    *,
    idle_s: float = 0.0,
) -> dict[str, float]:
    """Run the serving path for ``seconds``, waiting ``idle_s`` after each batch (spare
    time): wall time of the serving path and offer-CPU per input."""
    prep, table = model.preprocessing, input_table(model, model.preprocessing)
    classes = len(model.manifest.labels)
    done, offer_cpu, busy, i = 0, 0.0, 0.0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        xb, items = batches[i % len(batches)]
        x = np.stack([it.x for it in items])
        y = infer_batch(model, prep, table, x)
        ok, _ = usable_rows(y, len(items), classes)
        if shadow is not None:
            c0 = time.thread_time()
            shadow.offer(items, x, y, ok, model, 1e-4)
            offer_cpu += time.thread_time() - c0
        done += len(items)
        i += 1
        busy += time.perf_counter() - t0
        if idle_s > 0:
            if shadow is not None:
                shadow.spare.set()
            time.sleep(idle_s)
            if shadow is not None:
                shadow.spare.clear()
    return {"us_per_input": busy / done * 1e6, "offer_cpu_us": offer_cpu / done * 1e6}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.shadow_cost")
    p.add_argument("--bundle", required=True, type=Path, help="the serving model's bundle")
    p.add_argument("--candidate", required=True, type=Path, help="the candidate's bundle")
    p.add_argument("--inputs", help=".npy of raw inputs (default: the digits test split)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seconds", type=float, default=2.0, help="per round and side")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--share", type=float, default=1.0, help="--shadow-share")
    p.add_argument(
        "--load", type=float, default=0.5, help="share of the time the serving path is busy"
    )
    args = p.parse_args(argv)
    serving, candidate = load(args.bundle), load(args.candidate)
    if args.inputs:
        x = np.load(args.inputs)
    else:
        from stream.datasets import load_dataset

        x = load_dataset("digits").x_test
    n = max(len(x) // args.batch, 1)
    batches = []
    for b in range(n):
        xb = np.ascontiguousarray(x[b * args.batch : (b + 1) * args.batch])
        if len(xb) == args.batch:
            batches.append((xb, _items(xb)))
    metrics = AgentMetrics(registry=CollectorRegistry())
    gates = Gates(min_inputs=10**9)  # never decides: the shadow runs throughout
    flat = serve(serving, batches, 1.0, None)["us_per_input"]  # warm-up, and the pace
    idle_s = flat * 1e-6 * args.batch * (1.0 / args.load - 1.0)
    off, on, ratio, offer, shadowed = [], [], [], [], []
    for r in range(args.rounds):
        sides: dict[str, dict[str, float]] = {}
        for side in ("off", "on") if r % 2 == 0 else ("on", "off"):
            shadow = None
            if side == "on":
                shadow = Shadow(
                    candidate=candidate,
                    serving_prep=serving.preprocessing,
                    gates=gates,
                    share=args.share,
                    metrics=metrics,
                    seed=r,
                )
            sides[side] = serve(serving, batches, args.seconds, shadow, idle_s=idle_s)
            if shadow is not None:
                shadow.stop()
                total = shadow.stats.inputs + shadow.dropped
                shadowed.append(shadow.stats.inputs / total if total else 0.0)
        off.append(sides["off"]["us_per_input"])
        on.append(sides["on"]["us_per_input"])
        ratio.append(sides["on"]["us_per_input"] / sides["off"]["us_per_input"])
        offer.append(sides["on"]["offer_cpu_us"])
    out = {
        "serving": f"{serving.manifest.name} {serving.manifest.variant}",
        "candidate": f"{candidate.manifest.name} {candidate.manifest.variant}",
        "batch": args.batch,
        "share": args.share,
        "load": args.load,
        "idle_ms_per_batch": round(idle_s * 1000, 3),
        "off_us_per_input": spread(off),
        "on_us_per_input": spread(on),
        "ratio": spread(ratio),
        "ratio_median": median(ratio),
        "offer_cpu_us_per_input": spread(offer),
        "shadowed_share": spread(shadowed),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
