"""The drift scenario's arithmetic: accuracy by phase and over time, alarm episodes.

Pure functions over the results the demo read and the series Prometheus returned, so the
summary's figures are unit-tested apart from the processes that produce them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Answer:
    """One result: when its input was sent (device ``ts``, ms), when it was produced (ms),
    the version that answered and whether it was right (None: no true label)."""

    sent_ms: int
    produced_ms: int
    version: str
    correct: bool | None


@dataclass
class Timeline:
    """Every result of the run, in arrival order, with the run's moments (epoch ms)."""

    answers: list[Answer] = field(default_factory=list)
    drift_start_ms: int | None = None
    detected_ms: int | None = None
    promoted_ms: int | None = None

    def add(self, answer: Answer) -> None:
        self.answers.append(answer)

    def before_drift(self) -> list[Answer]:
        start = self.drift_start_ms
        return [a for a in self.answers if start is None or a.sent_ms < start]

    def during_drift(self, serving: str) -> list[Answer]:
        """Drifted inputs answered by the version served before the promotion."""
        start = self.drift_start_ms
        if start is None:
            return []
        return [a for a in self.answers if a.sent_ms >= start and a.version == serving]

    def after_promotion(self, promoted: str) -> list[Answer]:
        """Inputs sent after the promotion and answered by the promoted version."""
        at = self.promoted_ms
        if at is None:
            return []
        return [a for a in self.answers if a.sent_ms >= at and a.version == promoted]

    def answered_between(self, start_ms: int, end_ms: int) -> int:
        """Inputs sent at or after ``start_ms`` and answered by ``end_ms``."""
        return sum(1 for a in self.answers if a.sent_ms >= start_ms and a.produced_ms <= end_ms)


def accuracy(answers: Iterable[Answer]) -> float | None:
    """Share of correct answers among those with a true label; None when there are none."""
    labelled = [a.correct for a in answers if a.correct is not None]
    return sum(labelled) / len(labelled) if labelled else None


def accuracy_bins(answers: Sequence[Answer], bin_s: float) -> list[tuple[float, float, int]]:
    """``(bin start epoch s, accuracy, labelled answers)`` per ``bin_s`` of sending time,
    for the bins that have labelled answers."""
    bins: dict[int, list[bool]] = {}
    width_ms = max(int(bin_s * 1000), 1)
    for a in answers:
        if a.correct is not None:
            bins.setdefault(a.sent_ms // width_ms, []).append(a.correct)
    return [(k * width_ms / 1000, sum(v) / len(v), len(v)) for k, v in sorted(bins.items())]


def episodes(times_s: Sequence[float], step_s: float) -> list[tuple[float, float]]:
    """``(first, last)`` of each run of timestamps no more than 1.5 steps apart: the firing
    episodes of an alert from the sample times of its ``ALERTS{alertstate="firing"}``
    series (Prometheus returns samples only while it fires)."""
    runs: list[tuple[float, float]] = []
    for t in sorted(times_s):
        if runs and t - runs[-1][1] <= 1.5 * step_s:
            runs[-1] = (runs[-1][0], t)
        else:
            runs.append((t, t))
    return runs
