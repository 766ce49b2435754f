"""``summary.json``, ``details.json``, ``README.md`` and PNG plots of one benchmark run."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from bench.readme import fmt, render

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
    spreads: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {key: summary.get(key) for key in REQUIRED_KEYS}
    out.update({k: v for k, v in summary.items() if k not in out})
    out["goals"] = goals
    out["spreads"] = dict(spreads or {})
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


def console_table(summary: dict[str, Any]) -> str:
    """The summary printed at the end of a run."""
    rows = [("goal", "target", "measured", "status")]
    for g in summary.get("goals", []):
        rows.append((g["key"], g["target"], fmt(g["value"], ".3f"), g["status"]))
    extra = [
        ("agent_vs_naive_image", summary.get("agent_vs_naive_image")),
        ("confluent_vs_kafka_python", summary.get("confluent_vs_kafka_python")),
        ("sensor_decode_orjson_vs_stdlib", summary.get("sensor_decode_orjson_vs_stdlib")),
        *(
            (key, summary.get(key))
            for key in sorted(summary)
            if key.startswith(("agent_confluent_vs_", "agent_kafka_python_vs_"))
        ),
        ("tf_cold_start_s", summary.get("tf_cold_start_s")),
        ("tf_peak_rss_mb", summary.get("tf_peak_rss_mb")),
    ]
    for key, value in extra:
        rows.append((key, "", fmt(value, ".3f"), "info"))
    lat = summary.get("e2e_latency_ms")
    if isinstance(lat, dict):
        for p in lat.get("points", []):
            rows.append(
                (
                    f"e2e @ {p['offered_per_s']}/s",
                    "",
                    f"p50 {fmt(p['p50'])} p99 {fmt(p['p99'])}",
                    "info",
                )
            )
        rows.append(("knee_per_s", "", fmt(lat.get("knee_per_s")), "info"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows
    )
