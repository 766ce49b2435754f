"""``README.md`` of a benchmark run: the goals, one section per case, the profiles.

Why one module of this size: it renders one document; one function per section with the
table helpers at the top, in the order the README reads, so a change to a section's
wording or columns is made in one place and checked against its neighbours.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.stats import MAX_SPREAD, median


def fmt(value: Any, spec: str = ",.1f", missing: str = "—") -> str:
    if value is None:
        return missing
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _range(pairs: dict[str, Any] | None, spec: str = ".3f") -> str:
    """``min - max (n)`` of a headline's alternations; ``one run`` without several."""
    runs = (pairs or {}).get("runs") or []
    if len(runs) < 2:
        return "one run"
    assert pairs is not None
    return f"{fmt(pairs.get('min'), spec)} - {fmt(pairs.get('max'), spec)} ({len(runs)})"


def _ratio(value: Any, pairs: dict[str, Any] | None, spec: str = ".3f") -> str:
    """A ratio in bold with the range of its alternations."""
    text = f"**{fmt(value, spec)}**"
    runs = (pairs or {}).get("runs") or []
    if len(runs) < 2:
        return text
    assert pairs is not None
    return f"{text} ({len(runs)} runs: {fmt(pairs['min'], spec)} - {fmt(pairs['max'], spec)})"


def _head(*names: str, align: str = "") -> list[str]:
    """A table header; ``align`` has one letter per column, ``l`` or ``r`` (default ``l``)."""
    marks = ["---:" if a == "r" else "---" for a in align.ljust(len(names), "l")]
    return [_row(*names), _row(*marks)]


def render(
    summary: dict[str, Any],
    details: dict[str, Any],
    profiles: dict[str, Any],
    plots: dict[str, str],
) -> str:
    lines = _header(summary)
    sections: tuple[Callable[[], list[str]], ...] = (
        lambda: _model_bound(details),
        lambda: _client_bound(details),
        lambda: _naive(details),
        lambda: _client_library(details),
        lambda: _latency(summary, plots),
        lambda: _footprint(details, plots),
        lambda: _scale_out(details),
        lambda: _quantization(details, plots),
        lambda: _monitoring(details),
        lambda: _decoding(details),
        lambda: _profiles(summary, details, profiles),
    )
    for section in sections:
        lines += section()
    if "throughput" in plots:
        lines += ["## Throughput overview", "", f"![throughput]({plots['throughput']})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _header(summary: dict[str, Any]) -> list[str]:
    meta = summary.get("meta", {})
    mode = "quick (small sizes: a smoke check, not results)" if meta.get("quick") else "full"
    versions = ", ".join(f"{k} {v}" for k, v in (meta.get("versions") or {}).items())
    lines = [
        "# Benchmark results",
        "",
        "Written by `edgeinfer bench` (do not edit); docs/benchmarks.md explains the method.",
        "",
        f"- Command: `{meta.get('command', 'edgeinfer bench')}`",
        f"- Mode: **{mode}**",
        f"- Run: {meta.get('started_at', '?')} to {meta.get('finished_at', '?')} "
        f"({fmt(meta.get('duration_s'), '.0f')} s), commit {meta.get('git_commit')}",
        f"- Machine: {meta.get('cpu_model', '?')}, {meta.get('cpus', '?')} cores; the measured "
        f"process pinned to core {meta.get('measured_cpu', '?')}, broker and bench on "
        f"{meta.get('background_cpus', '?')}",
        f"- Load average (1 min): {fmt(meta.get('load_start'), '.2f')} at the start, "
        f"{fmt(meta.get('load_end'), '.2f')} at the end. Other work on a shared machine makes "
        "absolute numbers noisy; the two sides of each ratio ran back to back (model-bound: "
        "in turns on one core).",
        f"- Versions: {versions}",
        f"- Agent settings: `--threads {meta.get('threads')} --max-batch {meta.get('max_batch')} "
        f"--max-latency-ms {meta.get('max_latency_ms')}`",
        "",
    ]
    if summary.get("errors"):
        lines += ["## Cases that failed", ""]
        lines += [
            f"- **{k}**: {v.splitlines()[0] if v else v}" for k, v in summary["errors"].items()
        ]
        lines += [""]
    lines += [
        "## Goals",
        "",
        "Measured = the median over the alternations of the two sides (each alternation's own "
        "ratio; model-bound: each run's, the agent and raw LiteRT in turns); min - max (n) = "
        "the range over the n alternations. A goal whose range is "
        f"wider than {MAX_SPREAD:.0%} of its median, with the target inside it, is "
        f"**unstable**: on this run it can "
        "neither pass nor miss.",
        "",
        *_head("goal", "target", "measured", "min - max (n)", "status", align="llrrl"),
    ]
    spreads = summary.get("spreads") or {}
    for g in summary.get("goals", []):
        status = {"pass": "pass", "MISS": "**MISS**", "unstable": "**unstable**"}.get(
            g["status"], g["status"]
        )
        lines.append(
            _row(
                g["description"],
                g["target"],
                fmt(g["value"], ".3f"),
                "—" if g["value"] is None else _range(spreads.get(g["key"])),
                status,
            )
        )
    return [*lines, ""]


def _model_bound(details: dict[str, Any]) -> list[str]:
    mb = details.get("model_bound")
    if not mb:
        return []
    lines = [
        "## 1. Agent vs the model's own limit (MobileNetV2 96x96x3, random weights)",
        "",
        f"{mb.get('frames')} preloaded frames ({mb.get('input')}). Raw LiteRT: `invoke()` on the "
        "same frames, decoded, preprocessed (and quantized for int8) beforehand, same threads and "
        "core, at batch 1 and at the agent's max batch. The agent and the two raw loops share "
        f"the core in turns of {fmt(mb.get('turn_s'), 'g')} s (agent, raw batch 1, raw max "
        "batch, agent, ...; the others stopped), so all three see the same stretch of the "
        "machine: the agent's rate counts its results produced within its turns, raw LiteRT's "
        "its frames within its own (docs/benchmarks.md, case 1). Each run's agent / raw is its "
        "agent rate over its better raw rate; the headline is the median over the runs.",
        "",
        "Where the agent's time goes, from one run on its own (in turns a batch stopped "
        "mid-invoke would count the others' turns as inference): *in inference* = its "
        "`edge_agent_inference_duration_seconds` per frame (pixel lookup, LiteRT); *share* = "
        "the part of its wall time spent there; the rest is the pipeline around the model "
        "(JPEG decode, Kafka, results).",
        "",
        *_head(
            "variant",
            "raw, best (/s)",
            "agent (/s)",
            "agent / raw",
            "alone (/s)",
            "ms: in inference",
            "share in inference",
            align="lrrrrrr",
        ),
    ]
    for variant in ("int8", "float32"):
        d = mb.get(variant)
        if not d:
            continue
        agent = d["agent"]
        lines.append(
            _row(
                variant,
                fmt(d["raw_per_s"]),
                fmt(agent.get("per_s")),
                _ratio(d["ratio"], d.get("ratios")),
                fmt(agent.get("alone_per_s")),
                fmt(agent.get("infer_ms_per_input"), ".2f"),
                fmt(agent.get("inference_share"), ".3f"),
            )
        )
    others = []
    other = None
    for variant in ("int8", "float32"):
        cf = (mb.get(variant) or {}).get("agent_other")
        if cf:
            other = cf.get("client")
            others.append(
                f"{variant} {fmt(cf['per_s'])}/s, agent / raw "
                + _ratio(cf["ratio"], cf.get("ratios"))
            )
    if others:
        lines += [
            "",
            f"The agent above runs on its default client (`--client auto`: {mb.get('client')}). "
            f"The same agent with `--client {other}`, in turns with raw LiteRT too: "
            + "; ".join(others)
            + ".",
        ]
    rows: list[str] = []
    for variant in ("int8", "float32"):
        d = mb.get(variant) or {}
        for i, r in enumerate(d.get("runs", []), start=1):
            raw = ", ".join(f"batch {b} {fmt(v)}/s" for b, v in r["raw_per_s"].items())
            rows.append(
                f"{variant} #{i}: agent {fmt(r['agent_per_s'])}/s, "
                f"raw {raw}, {fmt(r['ratio'], '.3f')} ({r['agent_turns']} agent turns)"
            )
    if rows:
        lines += ["", "Runs: " + "; ".join(rows) + "."]
    return [*lines, ""]


def _client_bound(details: dict[str, Any]) -> list[str]:
    cb = details.get("client_bound")
    if not cb:
        return []
    lines = [
        "## 2. Agent vs the Kafka ceiling (client-bound models)",
        "",
        "Passthrough (`bench/loops.py`): the agent's loop without inference, on the client the "
        "agent runs on by default (`--client auto`: "
        f"{next(iter(cb.values())).get('client', 'kafka-python')}) with the agent's settings: "
        "poll up to 256 records, decode with the same codecs, fit/window, preprocess in "
        "batches, encode a result of the same shape (uniform scores) with the agent's JSON "
        "writer, send, and commit "
        "(asynchronously) what the broker has acknowledged, as the agent does. Same preloaded "
        "messages; each agent run over the passthrough "
        "run before it, median of the alternations.",
        "",
        *_head(
            "stream", "input", "messages", "passthrough (/s)", "agent (/s)", "ratio", align="llrrrr"
        ),
    ]
    for name, d in cb.items():
        lines.append(
            _row(
                name,
                d["input"],
                d["messages"],
                fmt(d["passthrough"]["per_s"]),
                fmt(d["agent"]["per_s"]),
                _ratio(d["ratio"], d.get("ratios")),
            )
        )
    rows = [(name, d["other"]) for name, d in cb.items() if d.get("other")]
    if rows:
        other = rows[0][1].get("client")
        default = next(iter(cb.values())).get("client", "kafka-python")
        lines += [
            "",
            f"On {other}: the agent with `--client {other}` against the same passthrough on "
            f"{other} (`bench/loops.py {'confluent' if other == 'confluent' else 'passthrough'}`"
            f"), and against the default agent ({default}) above.",
            "",
            *_head(
                "stream",
                "passthrough (/s)",
                f"agent --client {other} (/s)",
                "ratio",
                f"agent {other} / {default}",
                align="lrrrr",
            ),
        ]
        for name, c in rows:
            lines.append(
                _row(
                    name,
                    fmt(c["passthrough"]["per_s"]),
                    fmt(c["agent"]["per_s"]),
                    _ratio(c["ratio"], c.get("ratios")),
                    _ratio(
                        c["agent_vs_default_agent"], c.get("agent_vs_default_agent_ratios"), ".2f"
                    ),
                )
            )
    return [*lines, ""]


def _naive(details: dict[str, Any]) -> list[str]:
    nv = details.get("naive")
    if not nv:
        return []
    lines = [
        "## 3. Agent vs the naive loop",
        "",
        "Naive loop: iterate the kafka-python consumer one message at a time, decode, Keras "
        "`model.predict` on that one input, produce, commit every 100; same messages (sensor: "
        "chunks holding one full window each), same core, the same float32 model in the agent. "
        "Latency: both fed at half the naive loop's throughput for the same time; e2e = result "
        "`produced_at` - device `ts`.",
        "",
        *_head(
            "stream",
            "naive (/s)",
            "agent (/s)",
            "throughput ratio",
            "offered (/s)",
            "naive p50 / p99 (ms)",
            "agent p50 / p99 (ms)",
            "p99 naive / agent",
            align="lrrrrrrr",
        ),
    ]
    for name, d in nv.items():
        nl, al = d.get("naive_latency") or {}, d.get("agent_latency") or {}
        lines.append(
            _row(
                name,
                fmt(d["naive"]["per_s"]),
                fmt(d["agent"]["per_s"]),
                f"**{fmt(d['throughput_ratio'], '.1f')}x**",
                fmt(d.get("latency_rate_per_s")),
                f"{fmt(nl.get('p50'))} / {fmt(nl.get('p99'))}",
                f"{fmt(al.get('p50'))} / {fmt(al.get('p99'))}",
                f"{fmt(d.get('p99_naive_over_agent'), '.1f')}x",
            )
        )
    return [*lines, ""]


def _client_library(details: dict[str, Any]) -> list[str]:
    cl = details.get("client_library")
    if not cl:
        return []
    lines = [
        "## 4. The client library",
        "",
        f"{cl.get('messages')} {cl.get('input')}; one process on the measured core each.",
        "",
        *_head("client", "messages/s", align="lr"),
    ]
    lines += [_row(lib, fmt(d.get("per_s"))) for lib, d in cl.get("runs", {}).items()]
    lines += ["", f"confluent-kafka / kafka-python: **{fmt(cl.get('ratio'), '.2f')}x**.", ""]
    return lines


def _latency(summary: dict[str, Any], plots: dict[str, str]) -> list[str]:
    lat = summary.get("e2e_latency_ms")
    if not isinstance(lat, dict) or not lat.get("points"):
        return []
    lines = [
        "## 5. Latency under load",
        "",
        f"One agent, {lat.get('model')}, capacity {fmt(lat.get('capacity_per_s'))} frames/s "
        "(measured in section 1). Knee, the highest offered rate it keeps up with (achieved >= 95% "
        "of offered, p99 within 3x of the lightest load; medians over the runs of each rate): "
        f"**{fmt(lat.get('knee_per_s'))} /s**. The case has a broker of its own, and each rate "
        "runs on fresh topics with a fresh agent (the embedded broker's cost per fetch grows "
        f"with the partition), after {fmt(lat.get('unmeasured_s'), 'g')} s unmeasured; the devices "
        "send through one gateway producer with a "
        f"{fmt(lat.get('device_linger_ms'), 'g')} ms linger, counted in e2e (docs/benchmarks.md, "
        "case 5).",
        "",
        *_head(
            "offered (/s)",
            "of capacity",
            "achieved (/s)",
            "p50 (ms)",
            "p99 (ms)",
            "p99 of each run (ms)",
            align="rrrrrr",
        ),
    ]
    for p in lat["points"]:
        lines.append(
            _row(
                fmt(p["offered_per_s"]),
                fmt(p["fraction"], ".0%"),
                fmt(p["achieved_per_s"]),
                fmt(p["p50"]),
                fmt(p["p99"]),
                ", ".join(fmt(v) for v in p.get("p99_runs") or [p["p99"]]),
            )
        )
    floor = lat.get("consumer_floor_ms_by_fetch_max_wait_ms") or {}
    if floor:
        parts = [
            f"`fetch_max_wait_ms={k}`: p50 {fmt(v.get('p50'))} ms, p99 {fmt(v.get('p99'))} ms"
            for k, v in floor.items()
        ]
        lines += [
            "",
            "The floor under these numbers: a plain kafka-python consumer (no agent) at 4 msg/s on "
            "the embedded broker, fed by the same gateway, "
            + "; ".join(parts)
            + ". The agent waits 50 ms "
            "(`--fetch-max-wait-ms`; 500 ms is kafka-python's default). On Tansu a waiting "
            "fetch that found nothing looks again only after half its remaining wait, not "
            "when data arrives, so the fetch wait, not the agent, sets most of the light-load "
            "latency here.",
        ]
    if "latency" in plots:
        lines += ["", f"![latency]({plots['latency']})"]
    return [*lines, ""]


def _footprint(details: dict[str, Any], plots: dict[str, str]) -> list[str]:
    fp = details.get("footprint")
    if not fp:
        return []
    colds = fp.get("agent_cold_starts_s") or []
    lines = [
        "## 6. Footprint",
        "",
        f"{fp.get('model')}. Agent cold start: process start to `/readyz` 200 with the bundle on "
        f"disk (median of {colds}); its first HTTP answer came after "
        f"{fp.get('agent_first_http_answer_s')} s (imports done, health server up; model "
        "load, broker connection and group join follow). Peak RSS = VmHWM after answering "
        "frames. TensorFlow: `import tensorflow`, `keras.models.load_model`, one `predict`, "
        "same core.",
        "",
        *_head("process", "cold start (s)", "peak RSS (MB)", align="lrr"),
        _row("agent (LiteRT)", fmt(median(colds), ".3f"), fmt(fp.get("agent_peak_rss_mb"))),
        _row(
            "TensorFlow + Keras",
            fmt(fp.get("tf_cold_start_s"), ".3f"),
            fmt(fp.get("tf_peak_rss_mb")),
        ),
        "",
    ]
    mem = fp.get("agent_memory") or {}
    if mem.get("largest_mappings"):
        lines += [f"Agent memory: {mem.get('status')}. Largest resident mappings:", ""]
        lines += _head("mapping", "RSS (MB)", align="lr")
        lines += [_row(m["mapping"], m["rss_mb"]) for m in mem["largest_mappings"]]
        lines += [""]
    if "footprint" in plots:
        lines += [f"![footprint]({plots['footprint']})", ""]
    return lines


def _scale_out(details: dict[str, Any]) -> list[str]:
    so = details.get("scale_out")
    if not so:
        return []
    lines = [
        "## 7. Scale-out",
        "",
        "MobileNetV2 int8 frames produced in one burst over a 2-partition topic once the group is "
        "stable; each agent pinned to its own core, the broker and the bench free to use every "
        "core. CPU seconds during the burst: each agent, the broker, the bench (producer and "
        "result reader), and everything else on the machine (other processes; steal = time the "
        "hypervisor gave to other guests).",
        "",
        *_head(
            "agents",
            "frames/s",
            "burst (s)",
            "results by agent",
            "CPU s: agents",
            "broker",
            "bench",
            "other processes",
            "steal",
            align="lrrlrrrrr",
        ),
    ]
    for key in ("one", "two"):
        d = so.get(key) or {}
        cpu = d.get("cpu_seconds") or {}
        agents = " + ".join(fmt(v, ".1f") for k, v in cpu.items() if k.startswith("agent"))
        machine = d.get("machine_cpu_seconds") or {}
        lines.append(
            _row(
                d.get("label"),
                fmt(d.get("per_s")),
                fmt(d.get("span_s"), ".1f"),
                ", ".join(str(v) for v in (d.get("by_agent") or {}).values()),
                agents,
                fmt(cpu.get("broker"), ".1f"),
                fmt(cpu.get("bench"), ".1f"),
                fmt(machine.get("others"), ".1f"),
                fmt(machine.get("steal"), ".1f"),
            )
        )
    lines += [
        "",
        f"Two agents / one: **{fmt(so.get('ratio'), '.2f')}x** on {so.get('cores')} cores.",
        "",
    ]
    return lines


def _quantization(details: dict[str, Any], plots: dict[str, str]) -> list[str]:
    tables = details.get("quantization")
    if not tables:
        return []
    lines = ["## 8. Quantization (from the trainer's report.json)", ""]
    for t in tables:
        lines += [
            f"**{t.get('name')}** ({t.get('dataset')}, {t.get('arch')}): Keras accuracy "
            f"{fmt(t.get('keras_accuracy'), '.4f')} on {t.get('test_samples')} test samples; "
            f"recommended `{t.get('recommended')}`. Report: `{t.get('report')}`.",
            "",
            *_head(
                "variant",
                "size (B)",
                "vs float32",
                "accuracy",
                "drop",
                "LiteRT p50 (ms)",
                "p99 (ms)",
                "publishable",
                align="lrrrrrrl",
            ),
        ]
        for r in t["variants"]:
            if r.get("error"):
                lines.append(_row(r["variant"], f"failed: {r['error']}", "", "", "", "", "", "no"))
                continue
            lines.append(
                _row(
                    r["variant"],
                    fmt(r["size_bytes"], ","),
                    fmt(r["size_vs_float32"], ".2f"),
                    fmt(r["accuracy"], ".4f"),
                    fmt(r["accuracy_drop"], "+.4f"),
                    fmt(r["latency_p50_ms"], ".4f"),
                    fmt(r["latency_p99_ms"], ".4f"),
                    "yes" if r.get("publishable") else "no",
                )
            )
        lines += [""]
    if "quantization" in plots:
        lines += [f"![quantization]({plots['quantization']})", ""]
    return lines


def _monitoring(details: dict[str, Any]) -> list[str]:
    mo = details.get("monitoring")
    if not mo:
        return []
    lines = [
        "## Monitoring and sample capture cost",
        "",
        "The client-bound agent with `--no-monitor` and with the defaults (monitoring, sample "
        "capture at 0.2/s), alternating runs on one core: medians and spread "
        "((max - min) / median) of the rate, and the agent process's CPU time per result "
        "on/off. Per input: CPU time of `Monitoring.batch` at the agent's mean "
        "batch plus one publish every 0.5 s (`bench/monitor_cost.py`), as a share of the time "
        "per input at the fastest monitoring-off rate (goal: under 5%); flood: every result "
        "low-confidence.",
        "",
        *_head(
            "stream",
            "off (/s)",
            "off spread",
            "on (/s)",
            "on spread",
            "on/off",
            "CPU/result on/off",
            "us/input",
            "share",
            "flood share",
            align="lrrrrrrrrr",
        ),
    ]
    for name, d in mo.items():
        pi = d["per_input"]
        lines.append(
            _row(
                name,
                fmt(d["monitoring_off"]["median"]),
                fmt(d["monitoring_off"]["spread"], ".3f"),
                fmt(d["monitoring_on"]["median"]),
                fmt(d["monitoring_on"]["spread"], ".3f"),
                f"**{fmt(d['on_vs_off'], '.3f')}**",
                fmt(d.get("cpu_on_vs_off"), ".3f"),
                fmt(pi["us_per_input"]["median"], ".2f"),
                f"**{fmt(pi['share_of_client_bound'], '.2%')}**",
                fmt(pi["flood_share_of_client_bound"], ".2%"),
            )
        )
    return [*lines, ""]


def _decoding(details: dict[str, Any]) -> list[str]:
    dc = details.get("decoding")
    if not dc:
        return []
    fast, ref, r = dc["fast"], dc["reference"], dc["fast_vs_reference"]
    return [
        "## Sensor JSON decoding",
        "",
        f"`decode_sensor_record` on {dc.get('messages')} sensor chunks ({dc.get('shape')} "
        f"readings, {dc.get('mean_bytes')} bytes on average), in one process on the measured "
        "core: orjson (the agent's fast path) and the standard library's parser (the "
        f"reference rules), alternating {dc.get('rounds')} times, each first in turn; "
        "messages per CPU second (`bench/decode_cost.py`).",
        "",
        *_head("parser", "median (/s)", "min - max", "us per message", align="lrrr"),
        _row(
            f"orjson {dc.get('orjson')}",
            fmt(fast["median"]),
            f"{fmt(fast['min'])} - {fmt(fast['max'])}",
            fmt(dc["us_per_message"]["fast"]),
        ),
        _row(
            "standard library",
            fmt(ref["median"]),
            f"{fmt(ref['min'])} - {fmt(ref['max'])}",
            fmt(dc["us_per_message"]["reference"]),
        ),
        "",
        f"orjson / standard library: {_ratio(r['median'], r, '.2f')}.",
        "",
    ]


def _profiles(
    summary: dict[str, Any], details: dict[str, Any], profiles: dict[str, Any]
) -> list[str]:
    missed = [g for g in summary.get("goals", []) if g.get("met") is False]
    if not missed:
        unstable = [g for g in summary.get("goals", []) if g.get("status") == "unstable"]
        text = (
            f"No goal missed; {len(unstable)} unstable (no verdict): no profile taken."
            if unstable
            else "Every measured goal was met: no profile taken."
        )
        return ["## Where the time goes", "", text, ""]
    lines = ["## Where the time goes (goals missed)", ""]
    shown: set[str] = set()
    for g in missed:
        lines += [f"### {g['description']}: {fmt(g['value'], '.3f')} (target {g['target']})", ""]
        if g["key"] == "peak_rss_mb":
            mem = (details.get("footprint") or {}).get("agent_memory") or {}
            lines += [f"Memory split: {mem.get('status')}; largest mappings in section 6.", ""]
            continue
        if g["key"] == "scale_out_2_vs_1":
            so = details.get("scale_out") or {}
            parts: list[str] = []
            for key in ("one", "two"):
                d = so.get(key) or {}
                parts.append(
                    f"{d.get('label')}: processes {d.get('cpu_seconds')}, machine "
                    f"{d.get('machine_cpu_seconds')} over {fmt(d.get('span_s'), '.1f')} s"
                )
            lines += [
                "CPU seconds during the burst (section 7): " + "; ".join(parts) + ". The broker, "
                "the producer, the result reader and any other work on the machine share the two "
                "cores with the agents: two agents get less than two cores' worth.",
                "",
            ]
            continue
        p = profiles.get(g["key"])
        if not p:
            lines += ["No profile taken.", ""]
            continue
        if "error" in p:
            lines += [f"Profile failed: {p['error']}", ""]
            continue
        pieces = [p] if "by_category" in p else [v for v in p.values() if isinstance(v, dict)]
        for part in pieces:
            if "by_category" not in part:
                continue
            label = str(part.get("label"))
            if label in shown:
                lines += [f"Same profile as above ({label}).", ""]
                continue
            shown.add(label)
            lines += _profile_table(part)
    return lines


def _profile_table(p: dict[str, Any]) -> list[str]:
    head = f"**{p.get('label')}**: {p.get('samples')} samples"
    if p.get("busy_share") is not None:
        head += f", busy {p['busy_share']:.0%} of {p.get('seconds')} s"
    if p.get("ready_s_under_py_spy") is not None:
        head += f", ready after {p['ready_s_under_py_spy']} s under py-spy (idle included)"
    lines = [
        f"{head}. Raw samples: `{p.get('raw_file')}`.",
        "",
        *_head("where", "share", align="lr"),
    ]
    lines += [_row(c["category"], f"{c['share']:.1%}") for c in p["by_category"][:9]]
    lines += ["", "Top functions by self time:", "", *_head("function", "self", align="lr")]
    lines += [_row(f"`{c['function']}`", f"{c['share']:.1%}") for c in p.get("top_self", [])[:8]]
    return [*lines, ""]
