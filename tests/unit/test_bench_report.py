"""Profile parsing and the README/summary writers of the benchmark, on synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.profile import category_of, parse_raw, phase_of, split_threads, summarize
from bench.report import REQUIRED_KEYS, build_summary, console_table, write
from bench.stats import judge_goals, spread

RAW = [
    "thread (100): MainThread;<module> (stream/__main__.py:7);Pipeline.step "
    "(/x/edge_agent/pipeline.py:300);Interpreter.invoke (/x/ai_edge_litert/interpreter.py:9) 60",
    "thread (100): MainThread;<module> (stream/__main__.py:7);decode_image "
    "(/x/stream/codecs/images.py:140);ImageFile.load (/x/PIL/ImageFile.py:2) 30",
    "thread (101);Thread.run (threading.py:1);_poll_once (/x/kafka/net/selector.py:5);"
    "EpollSelector.select (/usr/lib/python3.11/selectors.py:468) 90",
    "not a stack line",
]


def test_parse_and_split_threads() -> None:
    stacks = parse_raw(RAW)
    assert len(stacks) == 3
    main, others = split_threads(stacks, main_tid=100)
    assert sum(c for _, c in main) == 90
    assert sum(c for _, c in others) == 90
    assert main[0][0][0].startswith("<module>")  # the thread frame is dropped
    prof = summarize(main)
    shares = {row["category"]: row["share"] for row in prof.as_dict()["by_category"]}
    assert shares == {
        "LiteRT invoke": pytest.approx(60 / 90, abs=1e-4),
        "image decode (PIL)": pytest.approx(30 / 90, abs=1e-4),
    }
    top = prof.as_dict()["top_self"][0]
    assert top["function"] == "Interpreter.invoke (ai_edge_litert/interpreter.py)"
    assert category_of(others[0][0]).startswith("waiting in select")


def test_cold_start_phases() -> None:
    importing = ["main (stream/cli.py:1)", "_find_and_load (<frozen importlib._bootstrap>:1)"]
    joining = [
        "run (edge_agent/agent.py:1)",
        "ensure_active_group (/x/kafka/coordinator/base.py:1)",
    ]
    assert phase_of(importing) == "imports"
    assert phase_of(joining).startswith("consumer group join")
    assert phase_of(["foo (bar.py:1)"]) == "other"


def _sample_summary() -> tuple[dict, dict]:  # type: ignore[type-arg]
    measured = {
        "agent_vs_raw_mobilenet_int8": 0.95,
        "agent_vs_raw_mobilenet_float32": 0.8,
        "cold_start_s": 3.2,
        "peak_rss_mb": 90.0,
        "tf_cold_start_s": 9.0,
        "tf_peak_rss_mb": 700.0,
        "e2e_latency_ms": {
            "model": "m",
            "capacity_per_s": 100.0,
            "knee_per_s": 75.0,
            "consumer_floor_ms_by_fetch_max_wait_ms": {"500": {"p50": 90.0, "p99": 110.0}},
            "points": [
                {
                    "offered_per_s": 50.0,
                    "fraction": 0.5,
                    "achieved_per_s": 50.0,
                    "p50": 9.0,
                    "p99": 20.0,
                },
                {
                    "offered_per_s": 75.0,
                    "fraction": 0.75,
                    "achieved_per_s": 74.0,
                    "p50": 12.0,
                    "p99": 30.0,
                },
            ],
        },
    }
    details = {
        "model_bound": {
            "frames": 10,
            "input": "JPEG",
            "client": "confluent",
            "turn_s": 0.5,
            "int8": {
                "runs": [
                    {
                        "agent_per_s": 104.5,
                        "raw_per_s": {"1": 100.0, "32": 110.0},
                        "raw_best_per_s": 110.0,
                        "ratio": 0.95,
                        "agent_turns": 14,
                    }
                ],
                "raw_per_s": 110.0,
                "agent": {
                    "per_s": 104.5,
                    "inference_share": 0.97,
                    "infer_ms_per_input": 9.25,
                    "alone_per_s": 103.0,
                },
                "ratio": 0.95,
                "ratios": spread([0.93, 0.95, 0.96]),
                "agent_other": {
                    "client": "kafka-python",
                    "per_s": 90.0,
                    "ratio": 0.818,
                    "ratios": spread([0.8, 0.818, 0.83]),
                },
            },
        },
        "client_bound": {
            "digits": {
                "messages": 100,
                "input": "PNG",
                "client": "confluent",
                "passthrough": {"per_s": 1000.0},
                "agent": {"per_s": 850.0},
                "ratio": 0.85,
                "ratios": spread([0.84, 0.85, 0.86]),
                "other": {
                    "client": "kafka-python",
                    "passthrough": {"per_s": 800.0},
                    "agent": {"per_s": 640.0},
                    "ratio": 0.8,
                    "ratios": spread([0.79, 0.8, 0.81]),
                    "agent_vs_default_agent": 0.75,
                    "agent_vs_default_agent_ratios": spread([0.74, 0.75, 0.77]),
                },
            },
        },
        "footprint": {
            "model": "m",
            "agent_cold_starts_s": [3.2],
            "agent_first_http_answer_s": [0.9],
            "agent_peak_rss_mb": 90.0,
            "agent_memory": {
                "status": {"VmHWM": 90.0},
                "largest_mappings": [{"mapping": "[heap]", "rss_mb": 20.0}],
            },
            "tf_cold_start_s": 9.0,
            "tf_peak_rss_mb": 700.0,
        },
    }
    return measured, details


def test_summary_and_readme(tmp_path: Path) -> None:
    measured, details = _sample_summary()
    spreads = {
        "agent_vs_raw_mobilenet_float32": spread([0.78, 0.8, 0.83]),
        "agent_vs_raw_mobilenet_int8": spread([0.6, 0.85, 1.05]),
    }
    goals = judge_goals(measured, spreads)
    profiles = {
        "agent_vs_raw_mobilenet_float32": {
            "agent": {
                "label": "agent mobilenet float32: main thread",
                "samples": 90,
                "busy_share": 0.9,
                "seconds": 4,
                "raw_file": "profiles/x.txt",
                "by_category": [{"category": "LiteRT invoke", "share": 0.8}],
                "top_self": [{"function": "invoke (x.py)", "share": 0.8}],
            }
        }
    }
    summary = build_summary(
        meta={"command": "edgeinfer bench --quick", "quick": True},
        summary=measured,
        goals=goals,
        errors={"scale_out": "BenchError: boom"},
        profiles=profiles,
        spreads=spreads,
    )
    for key in REQUIRED_KEYS:
        assert key in summary, key
    assert summary["scale_out_2_vs_1"] is None
    readme = write(tmp_path, summary, details, profiles)
    text = readme.read_text()
    assert "quick (small sizes" in text
    goal = "agent / raw LiteRT throughput, MobileNetV2 float32 (model-bound)"
    assert f"| {goal} | >= 0.9 | 0.800 | 0.780 - 0.830 (3) | **MISS** |" in text
    assert summary["spreads"]["agent_vs_raw_mobilenet_int8"]["spread"] > 0.2
    int8 = "agent / raw LiteRT throughput, MobileNetV2 int8 (model-bound)"
    assert f"| {int8} | >= 0.9 | {measured['agent_vs_raw_mobilenet_int8']:.3f} | " in text
    assert "0.600 - 1.050 (3) | **unstable** |" in text
    assert "| one run | pass |" in text  # single measurements keep pass/MISS
    # the default agent (--client auto) and the other client, each with its range
    assert "(`--client auto`: confluent). The same agent with `--client kafka-python`" in text
    assert "**0.950** (3 runs: 0.930 - 0.960)" in text
    assert "share the core in turns of 0.5 s" in text
    assert (
        "| int8 | 110.0 | 104.5 | **0.950** (3 runs: 0.930 - 0.960) | 103.0 | 9.25 | 0.970 |"
        in text
    )
    assert "int8 #1: agent 104.5/s, raw batch 1 100.0/s, batch 32 110.0/s, 0.950 (14 agent" in text
    assert "agent / raw **0.818** (3 runs: 0.800 - 0.830)" in text
    assert "| agent --client kafka-python (/s) | ratio | agent kafka-python / confluent |" in text
    assert "| **0.75** (3 runs: 0.74 - 0.77) |" in text
    assert "**75.0 /s**" in text  # the knee
    assert "LiteRT invoke | 80.0%" in text
    assert "boom" in text
    assert json.loads((tmp_path / "summary.json").read_text())["cold_start_s"] == 3.2
    assert (tmp_path / "plots" / "latency.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "footprint.png").is_file()
    table = console_table(summary)
    assert "cold_start_s" in table and "MISS" in table
