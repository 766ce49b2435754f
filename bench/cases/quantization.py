"""Quantization: size, accuracy and latency of every variant, from trainer reports.

With ``--report`` the given ``report.json`` files are used; otherwise ``edgeinfer train``
trains digits/cnn and basic-motions/gru once (cached under ``OUT/cache/train``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.assets import digits_models, sensor_models
from bench.harness import Harness
from bench.models import load_report


def run(h: Harness, reports: list[Path] | None = None) -> None:
    paths = list(reports or [])
    if not paths:
        for models in (digits_models(h), sensor_models(h)):
            assert models.report_path is not None
            paths.append(models.report_path)
    tables: list[dict[str, Any]] = []
    for path in paths:
        report = load_report(path)
        rows = []
        for variant, v in report["variants"].items():
            lat = v.get("latency_ms") or {}
            rows.append(
                {
                    "variant": variant,
                    "size_bytes": v.get("size_bytes"),
                    "size_vs_float32": v.get("size_vs_float32"),
                    "accuracy": v.get("accuracy"),
                    "accuracy_drop": v.get("accuracy_drop"),
                    "latency_p50_ms": lat.get("p50"),
                    "latency_p99_ms": lat.get("p99"),
                    "publishable": v.get("publishable"),
                    "error": v.get("error"),
                }
            )
        tables.append(
            {
                "report": str(path),
                "name": report.get("name"),
                "dataset": report.get("dataset"),
                "arch": report.get("arch"),
                "keras_accuracy": (report.get("keras") or {}).get("accuracy"),
                "test_samples": report.get("test_samples"),
                "recommended": report.get("recommended"),
                "variants": rows,
            }
        )
        h.progress(f"quantization: {report.get('name')} recommended {report.get('recommended')}")
    h.summary["quantization"] = [
        {
            "name": t["name"],
            "recommended": t["recommended"],
            "variants": {
                r["variant"]: {k: r[k] for k in ("size_bytes", "accuracy", "latency_p50_ms")}
                for r in t["variants"]
            },
        }
        for t in tables
    ]
    h.details["quantization"] = tables
