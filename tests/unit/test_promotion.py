"""The promotion policy (edge_agent/promotion.py): gates, stats on weird scores, the log."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edge_agent.promotion import (
    LABEL_WAIT_FACTOR,
    LATENCY_SLACK_S,
    REASONS,
    RESULTS,
    Decision,
    DecisionLog,
    Gates,
    ShadowStats,
    judge,
)

LABELS = ["a", "b", "c"]


def one_hot(labels: list[str], confidence: float = 0.9) -> np.ndarray:
    rest = (1.0 - confidence) / (len(LABELS) - 1)
    y = np.full((len(labels), len(LABELS)), rest, dtype=np.float32)
    for i, label in enumerate(labels):
        y[i, LABELS.index(label)] = confidence
    return y


def feed(
    stats: ShadowStats,
    candidate: list[str],
    serving: list[str | None],
    truth: list[str | None] | None = None,
    *,
    cand_s: float = 1e-4,
    serv_s: float = 1e-4,
) -> int:
    return stats.add_batch(
        candidate_scores=one_hot(candidate),
        candidate_labels=LABELS,
        serving_labels=serving,
        true_labels=truth if truth is not None else [None] * len(serving),
        candidate_s_per_input=cand_s,
        serving_s_per_input=serv_s,
    )


GATES = Gates(min_inputs=10, agreement=0.8, accuracy_margin=0.05, latency_factor=2.0)


def test_nothing_is_decided_before_min_inputs() -> None:
    stats = ShadowStats()
    feed(stats, ["a"] * 9, ["a"] * 9)
    assert judge(stats, GATES) is None
    feed(stats, ["a"], ["a"])
    decision = judge(stats, GATES)
    assert decision is not None
    assert (decision.result, decision.reason) == ("promoted", "agreement")
    assert decision.stats["inputs"] == 10 and decision.stats["agreement"] == 1.0


def test_low_agreement_without_labels_rejects() -> None:
    stats = ShadowStats()
    feed(stats, ["a"] * 7 + ["b"] * 3, ["a"] * 10)
    decision = judge(stats, GATES)
    assert decision is not None
    assert (decision.result, decision.reason) == ("rejected", "agreement")
    assert "0.7000" in decision.detail


def test_accuracy_takes_precedence_over_agreement() -> None:
    """A retrained model that fixes drift disagrees with the drifted serving model: with
    labels it is promoted although it agrees on no input."""
    stats = ShadowStats()
    feed(stats, ["b"] * 10, ["a"] * 10, ["b"] * 10)
    decision = judge(stats, GATES)
    assert decision is not None
    assert (decision.result, decision.reason) == ("promoted", "accuracy")
    assert decision.stats["candidate_accuracy"] == 1.0
    assert decision.stats["serving_accuracy"] == 0.0
    assert decision.stats["agreement"] == 0.0


def test_a_candidate_less_accurate_than_the_margin_is_rejected_despite_agreement() -> None:
    stats = ShadowStats()
    # agrees on 9 of 10, but the one disagreement is where the serving model was right
    feed(stats, ["a"] * 10, ["a"] * 9 + ["b"], ["a"] * 9 + ["b"])
    decision = judge(stats, GATES)
    assert decision is not None
    assert (decision.result, decision.reason) == ("rejected", "accuracy")
    # within the margin it passes
    assert judge(stats, Gates(min_inputs=10, accuracy_margin=0.1)) == Decision(
        "promoted",
        "accuracy",
        decision.detail.replace("margin 0.05", "margin 0.1"),
        stats.summary(),
    )


def test_few_labels_make_the_decision_wait_then_agreement_decides() -> None:
    stats = ShadowStats()
    feed(stats, ["a"] * 10, ["a"] * 10, ["a"] + [None] * 9)  # 1 labelled input of 10
    assert judge(stats, GATES) is None  # waits for labels
    for _ in range(LABEL_WAIT_FACTOR - 1):
        feed(stats, ["a"] * 10, ["a"] * 10)
    decision = judge(stats, GATES)
    assert decision is not None and decision.reason == "agreement"


def test_errors_reject_at_once_and_a_cap_tolerates_some() -> None:
    stats = ShadowStats()
    y = one_hot(["a", "a"])
    y[1, 0] = np.nan
    stats.add_batch(
        candidate_scores=y,
        candidate_labels=LABELS,
        serving_labels=["a", "a"],
        true_labels=[None, None],
        candidate_s_per_input=1e-4,
        serving_s_per_input=1e-4,
    )
    assert stats.errors == 1 and stats.inputs == 1
    decision = judge(stats, GATES)
    assert decision is not None and (decision.result, decision.reason) == ("rejected", "errors")
    assert judge(stats, Gates(min_inputs=10, max_errors=1)) is None


def test_a_wrong_shape_counts_every_input_as_an_error() -> None:
    stats = ShadowStats()
    compared = stats.add_batch(
        candidate_scores=np.zeros((3, 5), np.float32),
        candidate_labels=LABELS,
        serving_labels=["a", "b", "c"],
        true_labels=[None] * 3,
        candidate_s_per_input=1e-4,
        serving_s_per_input=1e-4,
    )
    assert compared == 0 and stats.errors == 3


def test_inputs_the_serving_model_could_not_answer_are_not_compared() -> None:
    stats = ShadowStats()
    assert feed(stats, ["a", "b"], [None, "b"]) == 1
    assert stats.inputs == 1 and stats.agreed == 1


def test_a_slow_candidate_is_rejected_beyond_the_factor_and_slack() -> None:
    slow = ShadowStats()
    feed(slow, ["a"] * 10, ["a"] * 10, cand_s=0.01, serv_s=0.001)
    decision = judge(slow, GATES)
    assert decision is not None and (decision.result, decision.reason) == ("rejected", "latency")
    near = ShadowStats()  # 5x slower, but within the absolute slack: scheduler noise
    feed(near, ["a"] * 10, ["a"] * 10, cand_s=LATENCY_SLACK_S / 2, serv_s=LATENCY_SLACK_S / 10)
    decision = judge(near, GATES)
    assert decision is not None and decision.result == "promoted"


shapes = st.tuples(st.integers(0, 6), st.integers(0, 5)) | hnp.array_shapes(max_dims=3)
scores = (
    hnp.arrays(
        dtype=st.sampled_from([np.float16, np.float32, np.float64]),
        shape=shapes,
        elements=st.floats(allow_nan=True, allow_infinity=True, width=16),
    )
    | hnp.arrays(dtype=np.int8, shape=shapes)
    | hnp.arrays(dtype=np.bool_, shape=shapes)
)


@settings(max_examples=300, deadline=None)
@given(
    y=scores,
    serving=st.lists(st.sampled_from([*LABELS, None, "zzz"]), max_size=6),
    truth=st.lists(st.sampled_from([*LABELS, None, "\udcff"]), max_size=6),
    cand_s=st.floats(allow_nan=True, allow_infinity=True),
    serv_s=st.floats(allow_nan=True, allow_infinity=True),
)
def test_any_scores_latencies_and_labels_never_break_the_stats_or_the_judge(
    y: np.ndarray,
    serving: list[str | None],
    truth: list[str | None],
    cand_s: float,
    serv_s: float,
) -> None:
    stats = ShadowStats()
    compared = stats.add_batch(
        candidate_scores=y,
        candidate_labels=LABELS,
        serving_labels=serving,
        true_labels=truth,
        candidate_s_per_input=cand_s,
        serving_s_per_input=serv_s,
    )
    assert 0 <= compared <= len(serving)
    assert stats.inputs == compared
    assert stats.errors + compared <= len(serving)
    assert 0 <= stats.agreed <= stats.inputs
    assert stats.labelled <= stats.inputs
    assert stats.candidate_correct <= stats.labelled and stats.serving_correct <= stats.labelled
    for value in (stats.agreement, stats.candidate_accuracy, stats.serving_accuracy):
        assert value is None or 0.0 <= value <= 1.0
    assert all(np.isfinite(v) and v >= 0 for v in stats.candidate_latency)
    json.dumps(stats.summary(), allow_nan=False)  # a decision's record is valid JSON
    for gates in (GATES, Gates(min_inputs=1), Gates(min_inputs=1, max_errors=100)):
        decision = judge(stats, gates)
        if decision is not None:
            assert decision.result in RESULTS and decision.reason in REASONS


def test_the_decision_log_remembers_rejections_across_instances(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path)
    log.record("digits", "2", Decision("rejected", "agreement", "low", {"inputs": 10}))
    log.record("digits", "3", Decision("promoted", "accuracy", "ok", {}))
    again = DecisionLog(tmp_path)
    assert again.rejected("digits") == {"2"}
    data = json.loads((tmp_path / "promotions" / "digits.json").read_text())
    assert [d["version"] for d in data["decisions"]] == ["2", "3"]
    assert data["decisions"][0]["stats"] == {"inputs": 10}
    assert again.rejected("other") == set()


@pytest.mark.parametrize("content", [b"{", b"[]", b'{"decisions": 3}', b"\xff" * 10])
def test_a_broken_decision_log_is_ignored(tmp_path: Path, content: bytes) -> None:
    folder = tmp_path / "promotions"
    folder.mkdir()
    (folder / "digits.json").write_bytes(content)
    assert DecisionLog(tmp_path).rejected("digits") == set()
