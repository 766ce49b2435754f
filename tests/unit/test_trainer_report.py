"""The report's judgement: publishable, accuracy drop in samples, recommendation, notes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trainer.report import build_report, recommend, render_markdown, write_report


def entry(acc: float, size: int, p50: float = 0.01) -> dict[str, Any]:
    return {
        "accuracy": acc,
        "macro_f1": acc,
        "size_bytes": size,
        "latency_ms": {"p50": p50, "p99": p50 * 2},
        "ops": ["CONV_2D"],
    }


def make(variants: dict[str, dict[str, Any]], keras_acc: float = 0.975, n: int = 40) -> dict:
    return build_report(
        meta={"name": "m", "version": "1", "dataset": "d", "arch": "gru"},
        keras={"accuracy": keras_acc, "macro_f1": keras_acc},
        variants=variants,
        max_drop=0.01,
        n_test=n,
    )


def test_one_sample_of_forty_is_more_than_the_allowed_drop() -> None:
    report = make({"float32": entry(0.975, 1000), "int8": entry(0.95, 400)})
    assert report["variants"]["float32"]["publishable"] is True
    int8 = report["variants"]["int8"]
    assert int8["publishable"] is False
    assert int8["accuracy_drop_samples"] == 1
    assert "1 of 40 test samples" in int8["not_publishable_reason"]
    assert "--max-accuracy-drop 0.01" in int8["not_publishable_reason"]
    assert report["recommended"] == "float32"
    assert any("int8 is NOT publishable" in note for note in report["notes"])
    assert any("One test sample is 0.0250" in note for note in report["notes"])


def test_a_drop_equal_to_the_limit_is_publishable() -> None:
    report = make({"float32": entry(0.97, 1000)}, keras_acc=0.98, n=100)
    assert report["variants"]["float32"]["publishable"] is True


def test_a_better_variant_is_publishable_with_a_negative_drop() -> None:
    report = make({"int8": entry(1.0, 10)})
    assert report["variants"]["int8"]["accuracy_drop"] == pytest.approx(-0.025)
    assert report["variants"]["int8"]["publishable"] is True


def test_recommend_prefers_smallest_among_the_most_accurate_then_latency() -> None:
    variants = {
        "float32": {**entry(0.99, 1000, 0.010), "publishable": True},
        "float16": {**entry(0.99, 500, 0.010), "publishable": True},
        "dynamic": {**entry(0.99, 260, 0.020), "publishable": True},
        "int8": {**entry(0.99, 250, 0.030), "publishable": True},
    }
    # dynamic and int8 are within 10 % in size: the faster one wins.
    assert recommend(variants, max_drop=0.01) == "dynamic"
    variants["int8"]["accuracy"] = 0.95  # out of the accurate tier
    assert recommend(variants, max_drop=0.01) == "dynamic"
    variants["dynamic"]["publishable"] = False
    assert recommend(variants, max_drop=0.01) == "float16"


def test_no_publishable_variant_means_no_recommendation() -> None:
    report = make({"int8": entry(0.5, 10)})
    assert report["recommended"] is None
    assert any("No variant is publishable" in note for note in report["notes"])


def test_int8_larger_than_float32_is_reported() -> None:
    report = make({"float32": entry(0.975, 288_000), "int8": entry(0.975, 672_000)})
    assert report["variants"]["int8"]["size_vs_float32"] == pytest.approx(672 / 288)
    assert any("LARGER than float32" in note for note in report["notes"])


def test_a_failed_variant_is_not_publishable_and_rendered() -> None:
    failed = {"error": "boom", "accuracy": None, "size_bytes": None, "latency_ms": None}
    report = make({"float32": entry(0.975, 1000), "int8": failed})
    assert report["variants"]["int8"]["publishable"] is False
    assert "does not run: boom" in report["variants"]["int8"]["not_publishable_reason"]
    text = render_markdown(report, {})
    assert "| int8 | failed: boom |" in text
    assert "| float32 (recommended) | 0.9750 |" in text


def test_fallback_is_noted(tmp_path: Path) -> None:
    v = {**entry(0.975, 1000), "use_default_delegates": False, "fallback_reason": "xnnpack"}
    report = make({"int8": v})
    assert any("use_default_delegates=false" in note for note in report["notes"])
    plot = tmp_path / "plots" / "c.png"
    plot.parent.mkdir()
    plot.write_bytes(b"png")
    json_path, md_path = write_report(tmp_path, report, {"confusion": plot})
    assert json_path.exists()
    md = md_path.read_text()
    assert "![confusion](plots/c.png)" in md
    assert "no (fallback)" in md
