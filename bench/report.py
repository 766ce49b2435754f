"""``summary.json``, ``details.json``, ``README.md`` and PNG plots of one benchmark run."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REQUIRED_KEYS = (
    "agent_vs_raw_mobilenet_int8",
    "agent_vs_raw_mobilenet_float32",
    "agent_vs_passthrough_sensor",
    "agent_vs_passthrough_digits",
    "agent_vs_naive_sensor",
    "agent_vs_naive_image",
    "cold_start_s",
    "peak_rss_mb",
    "tf_cold_start_s",
    "tf_peak_rss_mb",
    "scale_out_2_vs_1",
    "e2e_latency_ms",
)


def build_summary(
    *,
    meta: dict[str, Any],
    summary: dict[str, Any],
    goals: list[dict[str, Any]],
    errors: dict[str, str],
    profiles: dict[str, Any],
) -> dict[str, Any]:
    out: dict[str, Any] = {key: summary.get(key) for key in REQUIRED_KEYS}
    out.update({k: v for k, v in summary.items() if k not in out})
    out["goals"] = goals
    out["errors"] = errors
    out["profiles"] = {k: _profile_brief(v) for k, v in profiles.items()}
    out["meta"] = meta
    return out


def _profile_brief(p: Any) -> Any:
    if not isinstance(p, dict):
        return p
    if "by_category" in p:
        return {
            "label": p.get("label"),
            "by_category": p["by_category"][:6],
            "raw_file": p.get("raw_file"),
        }
    return {k: _profile_brief(v) for k, v in p.items()}


def write(
    out: Path, summary: dict[str, Any], details: dict[str, Any], profiles: dict[str, Any]
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "details.json").write_text(
        json.dumps({"details": details, "profiles": profiles}, indent=2, default=str) + "\n"
    )
    plots = make_plots(out, summary, details)
    readme = out / "README.md"
    readme.write_text(render(summary, details, profiles, plots))
    return readme


# --------------------------------------------------------------------------- plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def make_plots(out: Path, summary: dict[str, Any], details: dict[str, Any]) -> dict[str, str]:
    try:
        plt = _pyplot()
    except ImportError:
        logger.warning("matplotlib is not installed: no plots")
        return {}
    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    bars = _throughput_bars(details)
    if bars:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        names = [b[0] for b in bars]
        ys = list(range(len(bars)))
        colors = ["tab:blue" if b[2] == "agent" else "tab:gray" for b in bars]
        ax.barh(ys, [b[1] for b in bars], color=colors)
        ax.set_yticks(ys, names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("messages per second (log scale); blue = the agent")
        ax.set_title("Throughput, one core, same input for each pair")
        for y, b in zip(ys, bars, strict=True):
            ax.text(b[1], y, f" {b[1]:,.0f}", va="center", fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "throughput.png", dpi=110)
        plt.close(fig)
        made["throughput"] = "plots/throughput.png"
    lat = summary.get("e2e_latency_ms") or {}
    points = lat.get("points") if isinstance(lat, dict) else None
    if points:
        xs = [p["offered_per_s"] for p in points]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(xs, [p["p50"] for p in points], "o-", label="p50")
        ax.plot(xs, [p["p99"] for p in points], "s-", label="p99")
        if lat.get("capacity_per_s"):
            ax.axvline(lat["capacity_per_s"], color="gray", ls="--", label="measured capacity")
        if lat.get("knee_per_s"):
            ax.axvline(lat["knee_per_s"], color="tab:red", ls=":", label="knee")
        ax.set_yscale("log")
        ax.set_xlabel("offered frames per second")
        ax.set_ylabel("end-to-end latency (ms, log)")
        ax.set_title(f"Latency under load: {lat.get('model', '')}, one agent, one core")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / "latency.png", dpi=110)
        plt.close(fig)
        made["latency"] = "plots/latency.png"
    if summary.get("cold_start_s") is not None and summary.get("tf_cold_start_s") is not None:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.5))
        labels = ["agent (LiteRT)", "TensorFlow + Keras"]
        a1.bar(
            labels,
            [summary["cold_start_s"], summary["tf_cold_start_s"]],
            color=["tab:blue", "tab:gray"],
        )
        a1.set_ylabel("seconds")
        a1.set_title("cold start")
        a2.bar(
            labels,
            [summary.get("peak_rss_mb") or 0, summary.get("tf_peak_rss_mb") or 0],
            color=["tab:blue", "tab:gray"],
        )
        a2.set_ylabel("MB")
        a2.set_title("peak RSS")
        fig.tight_layout()
        fig.savefig(folder / "footprint.png", dpi=110)
        plt.close(fig)
        made["footprint"] = "plots/footprint.png"
    tables = details.get("quantization") or []
    if tables:
        fig, axes = plt.subplots(1, len(tables), figsize=(5 * len(tables), 3.8), squeeze=False)
        for ax, t in zip(axes[0], tables, strict=True):
            rows = [
                r for r in t["variants"] if r.get("size_bytes") and r.get("accuracy") is not None
            ]
            for r in rows:
                ax.scatter(r["size_bytes"] / 1024, r["accuracy"], s=40)
                ax.annotate(r["variant"], (r["size_bytes"] / 1024, r["accuracy"]), fontsize=8)
            ax.set_xlabel("model size (KiB)")
            ax.set_ylabel("test accuracy")
            ax.set_title(str(t.get("name")))
        fig.tight_layout()
        fig.savefig(folder / "quantization.png", dpi=110)
        plt.close(fig)
        made["quantization"] = "plots/quantization.png"
    return made


def _throughput_bars(details: dict[str, Any]) -> list[tuple[str, float, str]]:
    bars: list[tuple[str, float, str]] = []
    mb = details.get("model_bound") or {}
    for variant in ("int8", "float32"):
        d = mb.get(variant)
        if d:
            _add(bars, f"raw LiteRT mobilenet {variant}", d.get("raw_per_s"), "other")
            _add(bars, f"agent mobilenet {variant}", d["agent"].get("per_s"), "agent")
    for name, d in (details.get("client_bound") or {}).items():
        _add(bars, f"passthrough {name}", d["passthrough"].get("per_s"), "other")
        _add(bars, f"agent {name}", d["agent"].get("per_s"), "agent")
    for name, d in (details.get("naive") or {}).items():
        _add(bars, f"naive Keras loop {name}", d["naive"].get("per_s"), "other")
        _add(bars, f"agent {name} (float32)", d["agent"].get("per_s"), "agent")
    for lib, d in ((details.get("client_library") or {}).get("runs") or {}).items():
        _add(bars, f"echo loop {lib}", d.get("per_s"), "other")
    return bars


def _add(bars: list[tuple[str, float, str]], name: str, value: Any, kind: str) -> None:
    if isinstance(value, int | float) and value > 0:
        bars.append((name, float(value), kind))


# --------------------------------------------------------------------------- README


def _f(value: Any, spec: str = ",.1f", missing: str = "—") -> str:
    if value is None:
        return missing
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def render(
    summary: dict[str, Any],
    details: dict[str, Any],
    profiles: dict[str, Any],
    plots: dict[str, str],
) -> str:
    meta = summary.get("meta", {})
    lines = [
        "# Benchmark results",
        "",
        "Written by `edgeinfer bench`; do not edit by hand (docs/benchmarks.md explains the method).",
        "",
        f"- Command: `{meta.get('command', 'edgeinfer bench')}`",
        f"- Mode: **{'quick (small sizes: a smoke check, not results)' if meta.get('quick') else 'full'}**",
        f"- Run: {meta.get('started_at', '?')} → {meta.get('finished_at', '?')} ({_f(meta.get('duration_s'), '.0f')} s)",
        f"- Machine: {meta.get('cpu_model', '?')}, {meta.get('cpus', '?')} cores allowed; measured "
        f"process pinned to core {meta.get('measured_cpu', '?')}, broker and bench on {meta.get('background_cpus', '?')}",
        f"- Load average (1 min) at start {_f(meta.get('load_start'), '.2f')}, at end {_f(meta.get('load_end'), '.2f')} "
        "(other work on the machine makes absolute numbers noisy; each ratio's two sides ran back to back)",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in (meta.get('versions') or {}).items())}",
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
    lines += ["## Goals", "", "| goal | target | measured | status |", "| --- | --- | ---: | --- |"]
    for g in summary.get("goals", []):
        status = {"pass": "pass", "MISS": "**MISS**"}.get(g["status"], g["status"])
        lines.append(f"| {g['description']} | {g['target']} | {_f(g['value'], '.3f')} | {status} |")
    lines += [""]
    lines += _model_bound(details)
    lines += _client_bound(details)
    lines += _naive(details)
    lines += _client_library(details)
    lines += _latency(summary, plots)
    lines += _footprint(details, plots)
    lines += _scale_out(details)
    lines += _quantization(details, plots)
    lines += _profiles(summary, details, profiles)
    if "throughput" in plots:
        lines += ["## Throughput overview", "", f"![throughput]({plots['throughput']})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _model_bound(details: dict[str, Any]) -> list[str]:
    mb = details.get("model_bound")
    if not mb:
        return []
    lines = [
        "## 1. Agent vs the model's own limit (MobileNetV2 96x96x3, random weights)",
        "",
        f"{mb.get('frames')} preloaded {mb.get('input')} frames. Raw LiteRT: `invoke()` on the same frames, "
        "decoded and preprocessed beforehand, same threads and core, best of batch 1 and the agent's max batch "
        "(mean of the runs before and after the agent).",
        "",
        "| variant | raw LiteRT batch 1 (/s) | raw LiteRT max batch (/s) | raw used (/s) | agent (/s) | agent / raw |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for variant in ("int8", "float32"):
        d = mb.get(variant)
        if not d:
            continue
        raw0 = d["raw"][0]["batch"]
        keys = sorted(raw0, key=int)
        lines.append(
            f"| {variant} | {_f(raw0[keys[0]]['per_s'])} | {_f(raw0[keys[-1]]['per_s'])} | {_f(d['raw_per_s'])} "
            f"| {_f(d['agent']['per_s'])} | **{_f(d['ratio'], '.3f')}** |"
        )
    return [*lines, ""]


def _client_bound(details: dict[str, Any]) -> list[str]:
    cb = details.get("client_bound")
    if not cb:
        return []
    lines = [
        "## 2. Agent vs the Kafka ceiling (client-bound models)",
        "",
        "Passthrough: the agent's consume-decode-preprocess-produce-commit loop on kafka-python with the "
        "agent's settings, without inference (results with uniform scores), on the same preloaded messages.",
        "",
        "| stream | input | messages | passthrough (/s) | agent (/s) | agent / passthrough |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, d in cb.items():
        lines.append(
            f"| {name} | {d['input']} | {d['messages']} | {_f(d['passthrough']['per_s'])} | {_f(d['agent']['per_s'])} "
            f"| **{_f(d['ratio'], '.3f')}** |"
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
        "`model.predict` on that one input, produce, commit every 100. Same messages (sensor: chunks "
        "holding one full window each), same core. Latency: both fed at half the naive loop's "
        "throughput for the same time; e2e = result `produced_at` - device `ts`.",
        "",
        "| stream | naive (/s) | agent float32 (/s) | throughput ratio | offered (/s) | naive p50 / p99 (ms) | agent p50 / p99 (ms) | p99 naive / agent |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, d in nv.items():
        nl, al = d.get("naive_latency") or {}, d.get("agent_latency") or {}
        lines.append(
            f"| {name} | {_f(d['naive']['per_s'])} | {_f(d['agent']['per_s'])} | **{_f(d['throughput_ratio'], '.1f')}x** "
            f"| {_f(d.get('latency_rate_per_s'))} | {_f(nl.get('p50'))} / {_f(nl.get('p99'))} "
            f"| {_f(al.get('p50'))} / {_f(al.get('p99'))} | {_f(d.get('p99_naive_over_agent'), '.1f')}x |"
        )
    return [*lines, ""]


def _client_library(details: dict[str, Any]) -> list[str]:
    cl = details.get("client_library")
    if not cl:
        return []
    runs = cl.get("runs", {})
    lines = [
        "## 4. The client library",
        "",
        f"{cl.get('messages')} {cl.get('input')}.",
        "",
        "| client | messages/s |",
        "| --- | ---: |",
    ]
    for lib, d in runs.items():
        lines.append(f"| {lib} | {_f(d.get('per_s'))} |")
    r = cl.get("ratio")
    lines += ["", f"confluent-kafka / kafka-python: **{_f(r, '.2f')}x**.", ""]
    return lines


def _latency(summary: dict[str, Any], plots: dict[str, str]) -> list[str]:
    lat = summary.get("e2e_latency_ms")
    if not isinstance(lat, dict) or not lat.get("points"):
        return []
    lines = [
        "## 5. Latency under load",
        "",
        f"One agent, {lat.get('model')}, measured capacity {_f(lat.get('capacity_per_s'))} frames/s; "
        f"knee (highest rate kept up with, p99 within 3x of the lightest load): **{_f(lat.get('knee_per_s'))} /s**.",
        "",
        "| offered (/s) | of capacity | achieved (/s) | e2e p50 (ms) | e2e p99 (ms) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in lat["points"]:
        lines.append(
            f"| {_f(p['offered_per_s'])} | {_f(p['fraction'], '.0%')} | {_f(p['achieved_per_s'])} | {_f(p['p50'])} | {_f(p['p99'])} |"
        )
    if "latency" in plots:
        lines += ["", f"![latency]({plots['latency']})"]
    return [*lines, ""]


def _footprint(details: dict[str, Any], plots: dict[str, str]) -> list[str]:
    fp = details.get("footprint")
    if not fp:
        return []
    lines = [
        "## 6. Footprint",
        "",
        f"{fp.get('model')}. Agent: process start to `/readyz` 200 (median of "
        f"{len(fp.get('agent_cold_starts_s', []))}: {fp.get('agent_cold_starts_s')}); first HTTP answer "
        f"{fp.get('agent_first_http_answer_s')} s. Peak RSS = VmHWM after answering frames. TensorFlow: "
        "`import tensorflow`, `keras.models.load_model`, one `predict`.",
        "",
        "| process | cold start (s) | peak RSS (MB) |",
        "| --- | ---: | ---: |",
        f"| agent (LiteRT) | {_f(_median(fp.get('agent_cold_starts_s')), '.3f')} | {_f(fp.get('agent_peak_rss_mb'))} |",
        f"| TensorFlow + Keras | {_f(fp.get('tf_cold_start_s'), '.3f')} | {_f(fp.get('tf_peak_rss_mb'))} |",
        "",
    ]
    mem = (fp.get("agent_memory") or {}).get("largest_mappings")
    if mem:
        lines += [
            "Largest resident mappings of the agent:",
            "",
            "| mapping | RSS (MB) |",
            "| --- | ---: |",
        ]
        lines += [f"| {m['mapping']} | {m['rss_mb']} |" for m in mem]
        lines += [""]
    if "footprint" in plots:
        lines += [f"![footprint]({plots['footprint']})", ""]
    return lines


def _median(values: Any) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return float(s[len(s) // 2]) if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2


def _scale_out(details: dict[str, Any]) -> list[str]:
    so = details.get("scale_out")
    if not so:
        return []
    lines = [
        "## 7. Scale-out",
        "",
        "MobileNetV2 int8 frames in one burst over a 2-partition topic, after the group is stable. Each "
        "agent pinned to its own core; broker and bench free to use every core. CPU seconds of each "
        "process during the burst:",
        "",
        "| agents | frames/s | results by agent | CPU seconds |",
        "| --- | ---: | --- | --- |",
    ]
    for key in ("one", "two"):
        d = so.get(key) or {}
        lines.append(
            f"| {d.get('label')} | {_f(d.get('per_s'))} | {d.get('by_agent')} | {d.get('cpu_seconds')} |"
        )
    lines += [
        "",
        f"Two agents / one: **{_f(so.get('ratio'), '.2f')}x** on {so.get('cores')} cores.",
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
            f"**{t.get('name')}** ({t.get('dataset')}, {t.get('arch')}; Keras accuracy "
            f"{_f(t.get('keras_accuracy'), '.4f')} on {t.get('test_samples')} test samples; recommended "
            f"`{t.get('recommended')}`)",
            "",
            "| variant | size (B) | vs float32 | accuracy | drop | LiteRT p50 (ms) | p99 (ms) | publishable |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for r in t["variants"]:
            if r.get("error"):
                lines.append(f"| {r['variant']} | failed: {r['error']} | | | | | | no |")
                continue
            lines.append(
                f"| {r['variant']} | {_f(r['size_bytes'], ',')} | {_f(r['size_vs_float32'], '.2f')} | {_f(r['accuracy'], '.4f')} "
                f"| {_f(r['accuracy_drop'], '+.4f')} | {_f(r['latency_p50_ms'], '.4f')} | {_f(r['latency_p99_ms'], '.4f')} "
                f"| {'yes' if r.get('publishable') else 'no'} |"
            )
        lines += [""]
    if "quantization" in plots:
        lines += [f"![quantization]({plots['quantization']})", ""]
    return lines


def _profiles(
    summary: dict[str, Any], details: dict[str, Any], profiles: dict[str, Any]
) -> list[str]:
    missed = [g for g in summary.get("goals", []) if g.get("met") is False]
    if not missed:
        return [
            "## Where the time goes",
            "",
            "Every measured goal was met: no profile was taken.",
            "",
        ]
    lines = ["## Where the time goes (goals missed)", ""]
    shown: set[int] = set()
    for g in missed:
        lines += [f"### {g['description']}: {_f(g['value'], '.3f')} (target {g['target']})", ""]
        p = profiles.get(g["key"])
        if g["key"] == "peak_rss_mb":
            mem = (details.get("footprint") or {}).get("agent_memory") or {}
            lines += [f"Memory split: {mem.get('status')}; largest mappings in section 6.", ""]
            continue
        if g["key"] == "scale_out_2_vs_1":
            so = details.get("scale_out") or {}
            lines += [
                "CPU seconds per process during the burst (one agent / two agents): "
                f"{(so.get('one') or {}).get('cpu_seconds')} / {(so.get('two') or {}).get('cpu_seconds')}. "
                "On a 2-core machine the broker, the producer and the result reader share the cores "
                "with the agents.",
                "",
            ]
            continue
        if not p:
            lines += ["No profile taken.", ""]
            continue
        if "error" in p:
            lines += [f"Profile failed: {p['error']}", ""]
            continue
        for part in [p] if "by_category" in p else list(p.values()):
            if not isinstance(part, dict) or "by_category" not in part:
                continue
            if id(part) in shown:
                lines += [f"Same profile as above ({part.get('label')}).", ""]
                continue
            shown.add(id(part))
            lines += _profile_table(part)
    return lines


def _profile_table(p: dict[str, Any]) -> list[str]:
    head = f"**{p.get('label')}**: {p.get('samples')} samples"
    if p.get("busy_share") is not None:
        head += f", busy {p['busy_share']:.0%} of {p.get('seconds')} s (py-spy, CPU samples only)"
    if p.get("ready_s_under_py_spy") is not None:
        head += (
            f", ready after {p['ready_s_under_py_spy']} s under py-spy (main thread, idle included)"
        )
    lines = [
        head + f"; raw samples: `{p.get('raw_file')}`",
        "",
        "| where | share |",
        "| --- | ---: |",
    ]
    lines += [f"| {c['category']} | {c['share']:.1%} |" for c in p["by_category"][:8]]
    lines += ["", "Top functions by self time:", "", "| function | self |", "| --- | ---: |"]
    lines += [f"| `{c['function']}` | {c['share']:.1%} |" for c in p.get("top_self", [])[:8]]
    return [*lines, ""]


def console_table(summary: dict[str, Any]) -> str:
    """The summary printed at the end of a run."""
    rows = [("goal", "target", "measured", "status")]
    for g in summary.get("goals", []):
        rows.append((g["key"], g["target"], _f(g["value"], ".3f"), g["status"]))
    extra = [
        ("agent_vs_naive_image", summary.get("agent_vs_naive_image")),
        ("confluent_vs_kafka_python", summary.get("confluent_vs_kafka_python")),
        ("tf_cold_start_s", summary.get("tf_cold_start_s")),
        ("tf_peak_rss_mb", summary.get("tf_peak_rss_mb")),
    ]
    for key, value in extra:
        rows.append((key, "", _f(value, ".3f"), "info"))
    lat = summary.get("e2e_latency_ms")
    if isinstance(lat, dict):
        for p in lat.get("points", []):
            rows.append(
                (
                    f"e2e @ {p['offered_per_s']}/s",
                    "",
                    f"p50 {_f(p['p50'])} p99 {_f(p['p99'])}",
                    "info",
                )
            )
        rows.append(("knee_per_s", "", _f(lat.get("knee_per_s")), "info"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows
    )
