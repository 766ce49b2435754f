"""Pure logic of the fleet view: parsing the exposition format, quantiles, rates."""

from __future__ import annotations

import math

import pytest

from fleet.top import Scrape, bucket_delta, histogram_quantile, make_row, parse_metrics, render

TEXT = """\
# TYPE edge_agent_messages_consumed_total counter
edge_agent_messages_consumed_total{topic="images"} 120.0
edge_agent_messages_consumed_total{topic="sensors"} 30.0
# TYPE edge_agent_results_produced_total counter
edge_agent_results_produced_total{model="digits",topic="inference.results",version="2"} 100.0
# TYPE edge_agent_deadletters_total counter
edge_agent_deadletters_total{reason="not_json"} 3.0
edge_agent_deadletters_total{reason="corrupt_image"} 2.0
# TYPE edge_agent_consumer_lag gauge
edge_agent_consumer_lag{partition="0",topic="images"} 4.0
edge_agent_consumer_lag{partition="1",topic="images"} 6.0
# TYPE edge_agent_model_info gauge
edge_agent_model_info{model="digits",sha256="ab",variant="int8",version="2"} 1.0
# TYPE edge_agent_ready gauge
edge_agent_ready 1.0
# TYPE edge_agent_inference_duration_seconds histogram
edge_agent_inference_duration_seconds_bucket{le="0.001",model="digits",version="2"} 50.0
edge_agent_inference_duration_seconds_bucket{le="0.01",model="digits",version="2"} 90.0
edge_agent_inference_duration_seconds_bucket{le="+Inf",model="digits",version="2"} 100.0
edge_agent_inference_duration_seconds_count{model="digits",version="2"} 100.0
edge_agent_inference_duration_seconds_sum{model="digits",version="2"} 0.5
"""


def test_parse_sums_label_sets_and_reads_model() -> None:
    s = parse_metrics(TEXT, url="x:1", at=0.0)
    assert s.consumed == 150
    assert s.produced == 100
    assert s.deadletters == 5
    assert s.lag == 10
    assert s.ready is True
    assert (s.model, s.version) == ("digits", "2")
    assert s.buckets["inference_duration_seconds"] == {0.001: 50, 0.01: 90, math.inf: 100}


@pytest.mark.parametrize(
    ("q", "expected"),
    [(0.5, 0.001), (0.25, 0.0005), (0.7, 0.001 + 0.009 * 0.5), (0.99, 0.01)],
)
def test_histogram_quantile_interpolates_like_promql(q: float, expected: float) -> None:
    buckets = {0.001: 50.0, 0.01: 90.0, math.inf: 100.0}
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


def test_histogram_quantile_empty() -> None:
    assert histogram_quantile(0.5, {}) is None
    assert histogram_quantile(0.5, {1.0: 0.0, math.inf: 0.0}) is None


def test_bucket_delta_and_counter_reset() -> None:
    assert bucket_delta({1.0: 10, math.inf: 12}, {1.0: 4, math.inf: 5}) == {1.0: 6, math.inf: 7}
    # a restarted agent has smaller counters: use the new values as they are
    assert bucket_delta({1.0: 2, math.inf: 2}, {1.0: 4, math.inf: 5}) == {1.0: 2, math.inf: 2}


def test_rates_from_two_scrapes_and_render() -> None:
    old = parse_metrics(TEXT, url="a:1", at=10.0)
    new = parse_metrics(TEXT.replace("120.0", "220.0"), url="a:1", at=12.0)
    row = make_row(new, old)
    assert row.in_rate == pytest.approx(50.0)
    assert row.out_rate == 0.0
    down = make_row(Scrape(url="b:2", at=12.0, up=False, error="refused"), None)
    text = render([row, down])
    assert "DOWN" in text
    assert "fleet: 1/2 up" in text


def test_an_agent_that_runs_unsigned_bundles_is_flagged() -> None:
    signed = make_row(
        parse_metrics(TEXT + "edge_agent_model_unsigned_allowed 0.0\n", url="a", at=1), None
    )
    unsigned_text = TEXT.replace(
        "# TYPE edge_agent_ready", "edge_agent_model_unsigned_allowed 1.0\n# TYPE edge_agent_ready"
    )
    unsigned = make_row(parse_metrics(unsigned_text, url="b", at=1), None)
    assert not signed.unsigned_allowed and unsigned.unsigned_allowed
    assert "UNSIGNED" not in render([signed])
    lines = render([signed, unsigned]).splitlines()
    assert lines[-4].endswith("  UNSIGNED") and not lines[-5].endswith("UNSIGNED")
    assert lines[-1].startswith("UNSIGNED: 1 agent(s) run unsigned bundles (--allow-unsigned)")


def test_a_candidate_in_shadow_is_shown_with_its_agreement_and_accuracy() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from edge_agent.metrics import AgentMetrics

    reg = CollectorRegistry()
    m = AgentMetrics(registry=reg)
    m.shadow_agreement.labels(model="digits", version="1").set(0.2)  # decided earlier
    assert make_row(parse_metrics(generate_latest(reg).decode(), url="a", at=1), None).shadow == ""
    m.shadow_candidate.labels(model="digits", version="2").set(1)
    m.shadow_agreement.labels(model="digits", version="2").set(0.91)
    m.shadow_accuracy.labels(model="digits", version="2", role="candidate").set(0.97)
    m.shadow_accuracy.labels(model="digits", version="2", role="serving").set(0.62)
    row = make_row(parse_metrics(generate_latest(reg).decode(), url="a", at=1), None)
    assert row.shadow == "SHADOW v2 agree 0.91 acc 0.97/0.62"
    assert render([row]).splitlines()[3].endswith("  SHADOW v2 agree 0.91 acc 0.97/0.62")
