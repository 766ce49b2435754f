"""Scale-out: one agent vs two agents in one consumer group on a 2-partition topic.

MobileNetV2 int8 frames (model-bound, so the agents, not the broker, are the limit). The
agents are started first and warmed with probes until every one of them has answered (the
group is stable); then the frames are produced in one burst over both partitions and the
rate is measured from the results. For the whole case the broker and the bench process may
use every core (as on a real 2-core device running its own broker client); each agent is
pinned to its own core. CPU seconds of every process are recorded to explain the ratio.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bench.assets import frames, mobilenet_models
from bench.harness import AgentChild, Harness, cpu_seconds, machine_cpu
from bench.kafka_io import ResultsReader, preload
from bench.messages import jpeg_maker, jpeg_messages
from bench.stats import ratio, rounded, steady_rate

PARTITIONS = 2


def run(h: Harness) -> None:
    cpus = h.all_cpus or [h.cpu]
    two = [[cpus[0]], [cpus[1]]] if len(cpus) >= 2 else [[cpus[0]], [cpus[0]]]
    h.pin_background(None)
    try:
        one = _run(h, label="1 agent", cores=[[h.cpu]])
        both = _run(h, label="2 agents", cores=two)
    finally:
        h.pin_background(h.other_cpus)
    r = ratio(both["per_s"], one["per_s"])
    h.summary["scale_out_2_vs_1"] = rounded(r)
    h.details["scale_out"] = {"one": one, "two": both, "ratio": rounded(r), "cores": len(cpus)}
    h.progress(f"scale-out 2 vs 1: {'n/a' if r is None else f'{r:.2f}x'}")


def _run(h: Harness, *, label: str, cores: Sequence[Sequence[int]]) -> dict[str, Any]:
    bundle = mobilenet_models(h).bundles["int8"]
    msgs = jpeg_messages(frames(), h.config.scale_frames)
    make = jpeg_maker(frames())
    topics = h.topics(f"scale-{len(cores)}", partitions=PARTITIONS)
    agents: list[AgentChild] = []
    with ResultsReader(h.settings, topics.output) as reader:
        try:
            for i, c in enumerate(cores):
                agents.append(
                    h.agent(
                        name=f"agent-scale-{len(cores)}-{i}", bundle=bundle, topics=topics, cpus=c
                    )
                )
            for a in agents:
                a.wait_ready()
            h.warm(
                reader,
                topics,
                make,
                child=agents[0].child,
                partitions=PARTITIONS,
                agents=len(agents),
            )
            before = reader.count
            pids = {f"agent {i}": a.child.pid for i, a in enumerate(agents)}
            if h.broker_pid is not None:
                pids["broker"] = h.broker_pid
            pids["bench"] = os.getpid()
            cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
            machine0 = machine_cpu()
            h.progress(f"scale-out {label}: group stable, producing {len(msgs)} frames")
            preload(h.settings, topics.input, msgs, partitions=PARTITIONS)

            def alive() -> None:
                for a in agents:
                    a.child.check_alive()

            reader.wait_for(
                before + len(msgs),
                cap_s=h.config.measure_cap_s,
                check=alive,
                progress=h.progress,
                label=f"scale-out {label}",
            )
            cpu1 = {k: cpu_seconds(p) for k, p in pids.items()}
            machine1 = machine_cpu()
        finally:
            for a in agents:
                a.child.stop()
        measured = reader.observations[before:]
    times = [o.produced_at for o in measured]
    span_s = (max(times) - min(times)) / 1000.0 if len(times) > 1 else 0.0
    per_s = steady_rate(times)
    by_agent = Counter(o.agent_id or "?" for o in measured)
    cpu = {k: _delta(cpu0.get(k), cpu1.get(k)) for k in pids}
    ours = sum(v for v in cpu.values() if v is not None)
    busy = _delta(machine0.get("busy"), machine1.get("busy"))
    machine = {
        "busy": busy,
        "others": None if busy is None else round(max(busy - ours, 0.0), 2),
        "steal": _delta(machine0.get("steal"), machine1.get("steal")),
        "idle": _delta(machine0.get("idle"), machine1.get("idle")),
    }
    h.progress(f"scale-out {label}: {per_s or 0:,.1f} frames/s")
    return {
        "label": label,
        "per_s": rounded(per_s, 1),
        "results": len(measured),
        "by_agent": dict(by_agent),
        "span_s": round(span_s, 2),
        "cpu_seconds": cpu,
        "machine_cpu_seconds": machine,
        "cores": [list(c) for c in cores],
    }


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else round(after - before, 2)
