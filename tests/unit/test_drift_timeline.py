"""fleet.drift_timeline: the drift scenario's figures from results and alert series."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from fleet.drift_timeline import Answer, Timeline, accuracy, accuracy_bins, episodes


def _timeline() -> Timeline:
    t = Timeline(drift_start_ms=10_000, detected_ms=14_000, promoted_ms=30_000)
    # before the drift: 4 right of 5 (one unlabelled)
    for i, ok in enumerate([True, True, True, False, None, True]):
        t.add(Answer(sent_ms=1_000 * i, produced_ms=1_000 * i + 5, version="1", correct=ok))
    # drifted, served by v1: 1 of 4
    for i, ok in enumerate([False, True, False, False]):
        t.add(
            Answer(
                sent_ms=10_000 + 1_000 * i, produced_ms=10_005 + 1_000 * i, version="1", correct=ok
            )
        )
    # v2 shadowing does not answer; after the promotion v2 answers: 3 of 3
    for i in range(3):
        t.add(Answer(sent_ms=30_000 + i, produced_ms=30_010 + i, version="2", correct=True))
    # an input sent before the promotion but answered by v2 after the swap
    t.add(Answer(sent_ms=29_000, produced_ms=30_020, version="2", correct=False))
    return t


def test_phases() -> None:
    t = _timeline()
    assert accuracy(t.before_drift()) == 4 / 5
    assert accuracy(t.during_drift("1")) == 1 / 4
    assert accuracy(t.after_promotion("2")) == 1.0
    assert t.answered_between(10_000, 14_000) == 4
    assert accuracy([]) is None


def test_bins_group_by_sending_time() -> None:
    t = _timeline()
    bins = accuracy_bins(t.answers, 10.0)
    assert [(start, n) for start, _, n in bins] == [(0.0, 5), (10.0, 4), (20.0, 1), (30.0, 3)]
    assert bins[0][1] == 4 / 5


def test_episodes() -> None:
    assert episodes([], 1.0) == []
    assert episodes([5, 1, 2, 3, 10, 11], 1.0) == [(1, 3), (5, 5), (10, 11)]


@given(st.lists(st.floats(min_value=0, max_value=1e6), max_size=50), st.floats(0.1, 100))
def test_episodes_cover_every_sample_once(times: list[float], step: float) -> None:
    runs = episodes(times, step)
    assert sum(1 for t in times for a, b in runs if a <= t <= b) == len(times)
    assert all(runs[i][1] < runs[i + 1][0] for i in range(len(runs) - 1))


def test_plot_draws_every_version(tmp_path: Path) -> None:
    from fleet.drift_demo import _Moments, _plot

    t = _timeline()
    m = _Moments(drift_start=10.0, detected=14.0, published=25.0, promoted=30.0)
    path = tmp_path / "drift.png"
    _plot(path, t, {"1": [(0.0, 0.0), (20.0, 2.0)], "2": [(31.0, 0.1)]}, {"1": [(5.0, 0.9)]}, m)
    assert path.stat().st_size > 10_000
