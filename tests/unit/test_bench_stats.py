"""Pure helpers of the benchmark: percentiles, rates, ratios, goals, knee, presets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.config import CASES, BenchConfig, parse_cases
from bench.harness import agent_efficiency
from bench.messages import expected_windows, fit_windows
from bench.stats import (
    GOALS,
    MAX_SPREAD,
    Turn,
    judge_goals,
    knee,
    median,
    median_step,
    paired_ratios,
    percentile,
    ratio,
    spread,
    steady_rate,
    turn_rates,
)
from fleet.scrape import metric_sums


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 99, 100])
def test_percentile_matches_numpy(q: float) -> None:
    values = [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0]
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edge_cases() -> None:
    assert percentile([], 50) is None
    assert percentile([4.0], 99) == 4.0
    with pytest.raises(ValueError, match="q must be in"):
        percentile([1.0], 101)


@pytest.mark.parametrize("values", [[3.0], [5.0, 1.0], [4.0, 1.0, 9.0, 2.0], [2, 7, 1]])
def test_median_is_numpys(values: list[float]) -> None:
    assert median(values) == pytest.approx(float(np.median(values)))
    assert median([]) is None


def test_steady_rate_ignores_slow_start_and_tail() -> None:
    # 50 start-up events long before, 900 at one per ms, then a slow tail of 50.
    times = (
        [0.0] * 50
        + [float(5000 + i) for i in range(900)]
        + [float(9000 + 100 * i) for i in range(50)]
    )
    rate = steady_rate(times, trim=0.1)
    assert rate == pytest.approx(1000.0, rel=0.01)


def test_steady_rate_needs_a_span() -> None:
    assert steady_rate([]) is None
    assert steady_rate([1.0, 2.0]) is None
    assert steady_rate([5.0] * 100) is None
    assert steady_rate([0.0, 500.0, 1000.0], trim=0.0) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="trim"):
        steady_rate([1.0, 2.0, 3.0], trim=0.5)


def test_ratio() -> None:
    assert ratio(90.0, 100.0) == pytest.approx(0.9)
    assert ratio(None, 1.0) is None
    assert ratio(1.0, None) is None
    assert ratio(1.0, 0.0) is None


def test_goals_are_judged_from_values_never_assumed() -> None:
    summary = {
        "agent_vs_raw_mobilenet_int8": 0.95,
        "agent_vs_raw_mobilenet_float32": 0.5,
        "cold_start_s": 0.4,
        "peak_rss_mb": 120.0,
        "scale_out_2_vs_1": None,
    }
    by_key = {g["key"]: g for g in judge_goals(summary)}
    assert set(by_key) == {g.key for g in GOALS}
    assert by_key["agent_vs_raw_mobilenet_int8"]["status"] == "pass"
    assert by_key["agent_vs_raw_mobilenet_float32"]["status"] == "MISS"
    assert by_key["cold_start_s"]["met"] is True
    assert by_key["peak_rss_mb"]["met"] is False
    assert by_key["scale_out_2_vs_1"]["status"] == "not measured"
    assert by_key["agent_vs_naive_sensor"]["met"] is None


def test_spread_of_runs() -> None:
    s = spread([0.9, None, 1.1, 1.0])
    assert s == {"runs": [0.9, 1.1, 1.0], "median": 1.0, "min": 0.9, "max": 1.1, "spread": 0.2}
    assert spread([]) == {"runs": [], "median": None, "min": None, "max": None, "spread": None}
    assert spread([0.0, 0.0])["spread"] is None  # no relative spread around 0
    assert spread([2.0])["spread"] == 0.0


def test_paired_ratios() -> None:
    assert paired_ratios([90.0, None, 80.0], [100.0, 100.0, 0.0]) == [0.9]
    with pytest.raises(ValueError):
        paired_ratios([1.0], [1.0, 2.0])


def _turns(n: int, *, agent_rate: float, raw_rate: float) -> tuple[list[Turn], list[float]]:
    """n rounds of (agent 0.5 s, raw 0.5 s) from t = 1000 s; the agent produces a result
    every 1 / agent_rate s of its own turns, raw counts raw_rate frames a second."""
    turns, results, done, t = [], [], 0, 1000.0
    for _ in range(n):
        turns.append(Turn("agent", t, t + 0.5))
        k = 0.0
        while k < 0.5:
            results.append(math.floor((t + k) * 1000.0))
            k += 1.0 / agent_rate
        t += 0.5
        turns.append(Turn("raw_b32", t, t + 0.5, done, done + int(raw_rate * 0.5)))
        done += int(raw_rate * 0.5)
        t += 0.5
    return turns, results


def test_turn_rates_count_each_contender_in_its_own_turns() -> None:
    turns, results = _turns(10, agent_rate=400.0, raw_rate=440.0)
    # The agent ran out of work in its last turn: it produced 3 results there, no more.
    results = [r for r in results if r < 1009_000.0] + [1009_000.0, 1009_001.0, 1009_002.0]
    rates = turn_rates(turns, results)
    assert rates["agent_turns"] == 9  # its last turn (the one with the last result) dropped
    assert rates["agent"] == pytest.approx(400.0, rel=0.01)
    # raw only over its turns inside the agent's kept stretch (its 10th is after it)
    assert rates["raw_b32"] == pytest.approx(440.0)
    assert rates["agent_results"] == pytest.approx(9 * 200, abs=9)
    # Results from before the turns (the agent's warm-up on its own) are not counted.
    warm = [999_000.0 + i for i in range(50)]
    assert turn_rates(turns, warm + results)["agent_results"] == rates["agent_results"]


def test_turn_rates_need_two_full_agent_turns() -> None:
    turns, results = _turns(2, agent_rate=100.0, raw_rate=100.0)
    with pytest.raises(ValueError, match="only 1 full agent turn"):
        turn_rates(turns, results)
    with pytest.raises(ValueError, match="only 0 full agent turn"):
        turn_rates([t for t in turns if t.who != "agent"], results)


@pytest.mark.parametrize(
    ("runs", "status", "met"),
    [
        ([0.93, 0.95, 0.97], "pass", True),  # narrow: judged on the median
        ([0.80, 0.85, 0.88], "MISS", False),
        ([0.70, 0.95, 1.10], "unstable", None),  # wider than MAX_SPREAD: no verdict
        ([0.70, 0.80, 0.99], "unstable", None),  # the median misses, one run passes
        ([0.50, 0.60, 0.85], "MISS", False),  # wide, but every run misses: a verdict
        ([0.95, 1.20, 1.50], "pass", True),  # wide, but every run passes
        ([0.95], "pass", True),  # one run: nothing to judge the spread on
    ],
)
def test_goals_with_a_wide_spread_are_unstable(runs: list[float], status: str, met: bool) -> None:
    key = "agent_vs_raw_mobilenet_int8"
    runs_spread = spread(runs)
    by_key = {g["key"]: g for g in judge_goals({key: runs_spread["median"]}, {key: runs_spread})}
    g = by_key[key]
    assert (g["status"], g["met"]) == (status, met)
    assert g["median_met"] is (runs_spread["median"] >= 0.9)
    assert g["runs"] == len(runs)
    if status == "unstable":
        assert g["spread"] is not None and g["spread"] > MAX_SPREAD
    assert (g["min"], g["max"]) == (min(runs), max(runs)) or len(runs) == 1


def test_median_step_takes_each_statistic_s_median_and_keeps_every_p99() -> None:
    runs = [
        {"offered": 350.0, "achieved": 349.0, "p50": 50.0, "p90": 70.0, "p99": 85.0},
        {"offered": 350.0, "achieved": 338.0, "p50": 219.0, "p90": 400.0, "p99": 689.0},
        {"offered": 350.0, "achieved": 351.0, "p50": 48.0, "p90": 66.0, "p99": 110.0},
    ]
    point = median_step(runs)
    assert point["offered"] == 350.0
    assert point["achieved"] == 349.0
    assert (point["p50"], point["p90"], point["p99"]) == (50.0, 70.0, 110.0)
    assert point["p99_runs"] == [85.0, 689.0, 110.0]
    assert point["achieved_runs"] == [349.0, 338.0, 351.0]
    # A run without latencies (nothing answered) is left out of the medians, not zero.
    gap = median_step([*runs[:2], {"offered": 350.0, "achieved": None, "p99": None}])
    assert gap["p99"] == (85.0 + 689.0) / 2
    assert gap["p99_runs"] == [85.0, 689.0, None]
    # One run is its own median (the quick mode).
    assert median_step(runs[:1])["p99"] == 85.0


def test_knee_is_the_last_rate_kept_up_with() -> None:
    points = [
        {"offered": 50, "achieved": 50, "p99": 20},
        {"offered": 100, "achieved": 99, "p99": 30},
        {"offered": 150, "achieved": 148, "p99": 55},
        {"offered": 200, "achieved": 160, "p99": 900},
    ]
    assert knee(points) == 150
    assert knee(list(reversed(points))) == 150
    latency_blowup = [dict(p) for p in points[:3]]
    latency_blowup[2]["p99"] = 500
    assert knee(latency_blowup) == 100
    assert knee([{"offered": 10, "achieved": 2, "p99": 5}]) is None
    assert knee([]) is None


def test_quick_preset_is_small() -> None:
    quick, full = BenchConfig.quick_preset(), BenchConfig.full()
    assert quick.quick and not full.quick
    assert quick.image_frames <= 1500 and quick.small_messages <= 6000
    assert quick.naive_messages <= 500 and quick.measure_cap_s <= 15
    assert len(quick.load_fractions) <= 3 and quick.load_seconds <= 5
    assert quick.footprint_repeats == 1
    # Ratios need as many alternations in the quick mode as in the full one (item 4).
    assert quick.repeats == full.repeats >= 3
    assert quick.model_bound_repeats == full.model_bound_repeats >= 5
    for field in (
        "image_frames",
        "small_messages",
        "json_messages",
        "scale_frames",
        "load_seconds",
    ):
        assert getattr(quick, field) < getattr(full, field), field
    assert max(full.load_fractions) > 1.0  # the latency curve goes past saturation


def test_parse_cases() -> None:
    assert parse_cases(None) == CASES
    assert parse_cases("footprint, model-bound") == ("model_bound", "footprint")
    with pytest.raises(ValueError, match="unknown case"):
        parse_cases("model_bound,warp_speed")


def test_agent_efficiency_from_metrics() -> None:
    text = "\n".join(
        [
            "# HELP edge_agent_batch_size x",
            'edge_agent_batch_size_sum{model="m"} 900.0',
            'edge_agent_batch_size_count{model="m"} 30.0',
            'edge_agent_inference_duration_seconds_sum{model="m",version="1"} 3.0',
            'edge_agent_inference_duration_seconds_sum{model="m",version="2"} 1.5',
        ]
    )
    m = metric_sums(text)
    assert m["edge_agent_inference_duration_seconds_sum"] == pytest.approx(4.5)
    eff = agent_efficiency(m, per_s=180.0)
    assert eff["agent_infer_ms_per_input"] == pytest.approx(5.0)
    assert eff["agent_mean_batch"] == pytest.approx(30.0)
    assert eff["inference_share"] == pytest.approx(0.9)
    assert agent_efficiency({}, per_s=1.0) == {}


def test_sensor_windows_per_chunk() -> None:
    # One full window per chunk and stride = window: one result per message.
    assert expected_windows(100, devices=16, chunk=100, window=100, stride=100) == 100
    # Stride half the window: each device's first chunk gives 1, every later one 2.
    assert expected_windows(32, devices=16, chunk=100, window=100, stride=50) == 16 * 3
    windows = np.zeros((3, 100, 6), dtype=np.float32)
    assert fit_windows(windows, 64).shape == (3, 64, 6)
    assert fit_windows(windows, 250).shape == (3, 250, 6)
