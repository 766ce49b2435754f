"""``report.json`` and ``report.md``: every variant against the Keras model, and a recommendation.

A variant is *publishable* when it ran in LiteRT and its test accuracy is at most
``max_accuracy_drop`` below the Keras model's. The recommended variant is the smallest file
among the publishable variants whose accuracy is within ``max_accuracy_drop`` of the best
publishable accuracy; files within 10 % of each other in size are ranked by p50 latency.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Accuracies are compared with this slack so 0.97 - 0.96 == 0.01 counts as "within 0.01".
EPSILON = 1e-9
#: Files whose sizes differ by less than this fraction are ranked by latency instead.
SIZE_TIE = 0.10


def judge(entry: dict[str, Any], *, keras_accuracy: float, max_drop: float, n_test: int) -> None:
    """Fill ``publishable``, ``accuracy_drop`` and (if not) ``not_publishable_reason``."""
    if entry.get("error"):
        entry["publishable"] = False
        entry["not_publishable_reason"] = f"it does not run: {entry['error']}"
        return
    drop = keras_accuracy - float(entry["accuracy"])
    entry["accuracy_drop"] = drop
    entry["accuracy_drop_samples"] = round(drop * n_test)
    entry["publishable"] = drop <= max_drop + EPSILON
    if not entry["publishable"]:
        entry["not_publishable_reason"] = (
            f"accuracy {entry['accuracy']:.4f} is {drop:.4f} below the Keras model's "
            f"{keras_accuracy:.4f} ({round(drop * n_test)} of {n_test} test samples), more "
            f"than --max-accuracy-drop {max_drop}"
        )


def recommend(variants: dict[str, dict[str, Any]], *, max_drop: float) -> str | None:
    """The variant to ship: accurate first, then small, then fast (see the module doc)."""
    ok = {name: v for name, v in variants.items() if v.get("publishable")}
    if not ok:
        return None
    best = max(v["accuracy"] for v in ok.values())
    tier = [name for name, v in ok.items() if v["accuracy"] >= best - max_drop - EPSILON]
    smallest = min(ok[name]["size_bytes"] for name in tier)
    near = [name for name in tier if ok[name]["size_bytes"] <= smallest * (1 + SIZE_TIE)]
    return min(near, key=lambda name: (ok[name]["latency_ms"]["p50"], ok[name]["size_bytes"]))


def build_report(
    *,
    meta: dict[str, Any],
    keras: dict[str, Any],
    variants: dict[str, dict[str, Any]],
    max_drop: float,
    n_test: int,
) -> dict[str, Any]:
    for entry in variants.values():
        judge(entry, keras_accuracy=float(keras["accuracy"]), max_drop=max_drop, n_test=n_test)
    f32 = variants.get("float32", {}).get("size_bytes")
    for entry in variants.values():
        if f32 and entry.get("size_bytes"):
            entry["size_vs_float32"] = entry["size_bytes"] / f32
    recommended = recommend(variants, max_drop=max_drop)
    return {
        **meta,
        "max_accuracy_drop": max_drop,
        "test_samples": n_test,
        "keras": keras,
        "variants": variants,
        "recommended": recommended,
        "notes": notes(variants, recommended=recommended, n_test=n_test, max_drop=max_drop),
    }


def notes(
    variants: dict[str, dict[str, Any]], *, recommended: str | None, n_test: int, max_drop: float
) -> list[str]:
    out: list[str] = []
    if n_test and 1 / n_test > max_drop:
        out.append(
            f"One test sample is {1 / n_test:.4f} of the {n_test}-sample test split, more than "
            f"--max-accuracy-drop {max_drop}: a variant is publishable only if it gets at "
            "least as many test samples right as the Keras model."
        )
    for name, v in variants.items():
        if not v.get("publishable"):
            out.append(f"{name} is NOT publishable: {v.get('not_publishable_reason')}.")
        if v.get("use_default_delegates") is False:
            out.append(
                f"{name} failed its first invoke with LiteRT's default delegates (XNNPACK) and "
                f"runs without them ({v.get('fallback_reason')}); its manifest says "
                "use_default_delegates=false."
            )
    int8, f32 = variants.get("int8", {}), variants.get("float32", {})
    if int8.get("size_bytes") and f32.get("size_bytes") and int8["size_bytes"] > f32["size_bytes"]:
        out.append(
            f"int8 ({int8['size_bytes']:,} B) is LARGER than float32 ({f32['size_bytes']:,} B): "
            "unrolled recurrent layers carry quantization parameters for every unrolled tensor. "
            "Do not assume int8 is the variant to ship."
            + (
                f" int8-loop (the recurrence as one loop, int8 matmuls) is "
                f"{variants['int8-loop']['size_bytes']:,} B."
                if (variants.get("int8-loop") or {}).get("size_bytes")
                else ""
            )
        )
    if recommended:
        v = variants[recommended]
        out.append(
            f"Recommended: {recommended} (accuracy {v['accuracy']:.4f}, "
            f"{v['size_bytes']:,} B, p50 {v['latency_ms']['p50']:.3f} ms): the smallest file "
            f"among the publishable variants within {max_drop} of the best accuracy, "
            "near-ties in size broken by latency."
        )
    else:
        out.append("No variant is publishable: do not ship this model.")
    return out


def write_report(
    out_dir: Path, report: dict[str, Any], plots: dict[str, Path]
) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path = out_dir / "report.md"
    md_path.write_text(
        render_markdown(report, {k: p.relative_to(out_dir) for k, p in plots.items()})
    )
    return json_path, md_path


def _fmt(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def render_markdown(report: dict[str, Any], plots: dict[str, Path]) -> str:
    keras = report["keras"]
    lines = [
        f"# {report.get('name', 'model')} {report.get('version', '')}".rstrip(),
        "",
        f"Dataset `{report.get('dataset')}`, architecture `{report.get('arch')}`, "
        f"{report['test_samples']} test samples. Device: {report.get('device', '?')}.",
        "",
        f"Keras model: accuracy **{keras['accuracy']:.4f}**, macro F1 {keras['macro_f1']:.4f}.",
        "",
        "Every variant below ran in LiteRT (ai-edge-litert) on the test split, 1 thread; "
        "latency is one inference (set input, invoke, read output).",
        "",
        "| variant | accuracy | macro F1 | drop vs Keras | agrees with Keras | size (B) "
        "| gzip (B) | vs float32 | p50 ms | p99 ms | default delegates | publishable |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for name, v in report["variants"].items():
        if v.get("error"):
            lines.append(f"| {name} | failed: {v['error']} | | | | | | | | | no |")
            continue
        mark = " (recommended)" if name == report.get("recommended") else ""
        lines.append(
            f"| {name}{mark} | {v['accuracy']:.4f} | {v['macro_f1']:.4f} "
            f"| {_fmt(v.get('accuracy_drop'), '+.4f')} "
            f"| {_fmt(v.get('agreement_with_keras'), '.4f')} "
            f"| {v['size_bytes']:,} | {_fmt(v.get('gzip_size_bytes'), ',')} "
            f"| {_fmt(v.get('size_vs_float32'), '.2f')} "
            f"| {v['latency_ms']['p50']:.4f} | {v['latency_ms']['p99']:.4f} "
            f"| {'yes' if v.get('use_default_delegates', True) else 'no (fallback)'} "
            f"| {'yes' if v['publishable'] else '**no**'} |"
        )
    lines += ["", f"`--max-accuracy-drop {report['max_accuracy_drop']}`.", ""]
    lines += [f"- {note}" for note in report.get("notes", [])]
    lines += _compression_lines(report)
    lines += ["", "## Ops", ""]
    for name, v in report["variants"].items():
        if v.get("ops"):
            lines.append(f"- {name}: {', '.join(v['ops'])}")
    if plots:
        lines += ["", "## Plots", ""]
        for title, path in plots.items():
            lines += [f"![{title}]({path.as_posix()})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _compression_lines(report: dict[str, Any]) -> list[str]:
    """The ``pruning`` and ``distillation`` sections of ``report.md`` (when present)."""
    lines: list[str] = []
    pruning = report.get("pruning")
    if pruning:
        pruned_accuracy = (pruning.get("keras") or {}).get("accuracy")
        lines += [
            "",
            "## Pruning",
            "",
            f"Target sparsity {pruning['sparsity']}, measured "
            f"{pruning.get('measured_sparsity', 0):.4f} of {pruning.get('prunable_params', 0):,} "
            f"prunable kernel weights after {pruning.get('fine_tune_epochs')} fine-tuning "
            f"epochs; pruned Keras accuracy {_fmt(pruned_accuracy, '.4f')}. "
            "Variants: " + (", ".join(pruning.get("variants", [])) or "none") + ".",
        ]
    distillation = report.get("distillation")
    if distillation:
        lines += [
            "",
            "## Distillation",
            "",
            "| model | accuracy | params |",
            "| --- | ---: | ---: |",
        ]
        for key in ("teacher", "student", "student_alone"):
            m = distillation.get(key) or {}
            lines.append(
                f"| {key} | {_fmt(m.get('accuracy'), '.4f')} | {_fmt(m.get('params'), ',')} |"
            )
        lines += ["", "Variants: " + (", ".join(distillation.get("variants", [])) or "none") + "."]
    return lines
