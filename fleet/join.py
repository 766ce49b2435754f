"""Results joined with feedback, in bounded memory: the arithmetic of ``edgeinfer monitor``.

A result and the feedback for its input share a key, the input's ``(topic, partition,
offset)`` (docs/wire-format.md, "Feedback"). Either may arrive first, so each side waits
for the other in an insertion-ordered map capped in entries (``max_results``,
``max_feedback``) and in age (``max_wait_s``); past either cap the oldest is evicted and
counted as ``unmatched_evicted``. A second message for a key still waiting replaces the
first (``replaced``: an agent that replays after a failure answers an input twice).

Each join scores the result: correct when its label equals the feedback's. Per model and
version, :class:`Accuracy` keeps the last ``window`` scores; at most ``max_versions``
model versions are tracked (the least recently joined is dropped), so the metric labels
stay bounded whatever the results topic carries.

Pure: no Kafka, no Prometheus, no clock of its own (callers pass ``now``); not thread-safe
(the monitor holds a lock around it).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Literal

#: ``(topic, partition, offset)`` of an input.
Key = tuple[str, int, int]
Side = Literal["results", "feedback"]
Outcome = Literal["matched", "unmatched_evicted", "replaced", "invalid"]
OUTCOMES: tuple[Outcome, ...] = ("matched", "unmatched_evicted", "replaced", "invalid")

DEFAULT_WINDOW = 500
DEFAULT_MAX_PENDING = 50_000
DEFAULT_MAX_WAIT_S = 600.0
DEFAULT_MAX_VERSIONS = 64


class Accuracy:
    """The share of correct results among the last ``window`` joined ones."""

    def __init__(self, window: int) -> None:
        if window < 1:
            msg = f"the accuracy window must be >= 1 joined results, got {window}"
            raise ValueError(msg)
        self._scores: deque[bool] = deque(maxlen=window)
        self._correct_in_window = 0
        #: Joined since this version was first seen (not only in the window).
        self.correct = 0
        self.incorrect = 0

    def add(self, correct: bool) -> None:
        scores = self._scores
        if len(scores) == scores.maxlen and scores[0]:
            self._correct_in_window -= 1
        scores.append(correct)
        if correct:
            self._correct_in_window += 1
            self.correct += 1
        else:
            self.incorrect += 1

    @property
    def size(self) -> int:
        """Joined results in the window (at most ``window``)."""
        return len(self._scores)

    @property
    def value(self) -> float | None:
        """Correct share of the window; None before the first joined result."""
        return self._correct_in_window / len(self._scores) if self._scores else None


@dataclass(frozen=True)
class Joined:
    """One result scored against its feedback."""

    key: Key
    model: str
    version: str
    predicted: str
    true_label: str

    @property
    def correct(self) -> bool:
        return self.predicted == self.true_label


@dataclass(frozen=True)
class VersionStats:
    model: str
    version: str
    accuracy: float | None
    window: int
    correct: int
    incorrect: int


@dataclass(frozen=True)
class JoinSnapshot:
    """What the metrics export, copied at one moment."""

    versions: list[VersionStats]
    outcomes: dict[tuple[Side, Outcome], int]
    pending: dict[Side, int]


@dataclass(frozen=True)
class _Waiting:
    at: float
    model: str
    version: str
    label: str


@dataclass(eq=False)
class FeedbackJoin:
    window: int = DEFAULT_WINDOW
    max_results: int = DEFAULT_MAX_PENDING
    max_feedback: int = DEFAULT_MAX_PENDING
    max_wait_s: float = DEFAULT_MAX_WAIT_S
    max_versions: int = DEFAULT_MAX_VERSIONS
    _results: OrderedDict[Key, _Waiting] = field(default_factory=OrderedDict, init=False)
    _feedback: OrderedDict[Key, _Waiting] = field(default_factory=OrderedDict, init=False)
    _versions: OrderedDict[tuple[str, str], Accuracy] = field(
        default_factory=OrderedDict, init=False
    )
    outcomes: dict[tuple[Side, Outcome], int] = field(init=False)

    def __post_init__(self) -> None:
        for name in ("window", "max_results", "max_feedback", "max_versions"):
            if getattr(self, name) < 1:
                msg = f"{name} must be >= 1, got {getattr(self, name)}"
                raise ValueError(msg)
        if self.max_wait_s <= 0:
            msg = f"max_wait_s must be > 0 seconds, got {self.max_wait_s}"
            raise ValueError(msg)
        self.outcomes = {(s, o): 0 for s in ("results", "feedback") for o in OUTCOMES}

    # ------------------------------------------------------------------ input

    def add_result(
        self, key: Key, *, model: str, version: str, label: str, now: float
    ) -> Joined | None:
        """A result for the input at ``key``: joined now, or kept waiting for its feedback."""
        fb = self._feedback.pop(key, None)
        if fb is not None:
            return self._join(key, model, version, label, fb.label)
        self._wait("results", self._results, key, _Waiting(now, model, version, label), now)
        return None

    def add_feedback(self, key: Key, *, label: str, now: float) -> Joined | None:
        """Feedback for the input at ``key``: joined now, or kept waiting for its result."""
        result = self._results.pop(key, None)
        if result is not None:
            return self._join(key, result.model, result.version, result.label, label)
        self._wait("feedback", self._feedback, key, _Waiting(now, "", "", label), now)
        return None

    def invalid(self, side: Side) -> None:
        """Count a message of ``side`` that could not be read (it is skipped)."""
        self.outcomes[(side, "invalid")] += 1

    def expire(self, now: float) -> None:
        """Evict what has waited longer than ``max_wait_s``."""
        sides: tuple[tuple[Side, OrderedDict[Key, _Waiting]], ...] = (
            ("results", self._results),
            ("feedback", self._feedback),
        )
        for side, waiting in sides:
            while waiting:
                key, oldest = next(iter(waiting.items()))
                if now - oldest.at <= self.max_wait_s:
                    break
                del waiting[key]
                self.outcomes[(side, "unmatched_evicted")] += 1

    # ------------------------------------------------------------------ output

    def accuracy(self, model: str, version: str) -> Accuracy | None:
        return self._versions.get((model, version))

    def snapshot(self) -> JoinSnapshot:
        return JoinSnapshot(
            versions=[
                VersionStats(m, v, acc.value, acc.size, acc.correct, acc.incorrect)
                for (m, v), acc in self._versions.items()
            ],
            outcomes=dict(self.outcomes),
            pending={"results": len(self._results), "feedback": len(self._feedback)},
        )

    # ------------------------------------------------------------------ internals

    def _wait(
        self,
        side: Side,
        waiting: OrderedDict[Key, _Waiting],
        key: Key,
        entry: _Waiting,
        now: float,
    ) -> None:
        if waiting.pop(key, None) is not None:
            self.outcomes[(side, "replaced")] += 1
        waiting[key] = entry
        cap = self.max_results if side == "results" else self.max_feedback
        while len(waiting) > cap:
            waiting.popitem(last=False)
            self.outcomes[(side, "unmatched_evicted")] += 1
        self.expire(now)

    def _join(self, key: Key, model: str, version: str, predicted: str, true: str) -> Joined:
        self.outcomes[("results", "matched")] += 1
        self.outcomes[("feedback", "matched")] += 1
        joined = Joined(key, model, version, predicted, true)
        name = (model, version)
        acc = self._versions.pop(name, None) or Accuracy(self.window)
        self._versions[name] = acc  # most recently joined last
        while len(self._versions) > self.max_versions:
            self._versions.popitem(last=False)
        acc.add(joined.correct)
        return joined
