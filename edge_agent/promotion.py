"""The promotion policy: when a candidate run in shadow replaces the serving model.

Pure logic (no threads, no I/O but :class:`DecisionLog`'s file): :class:`ShadowStats`
accumulates what the shadow saw (:mod:`edge_agent.shadow` feeds it), :func:`judge` applies
the :class:`Gates` and returns a :class:`Decision` once the evidence is enough. The rule,
in order (docs/models.md, "Shadow and promote"):

1. **errors**: more than ``max_errors`` candidate outputs unusable (an exception, NaN,
   a wrong shape) rejects at once, whatever else the numbers say.
2. nothing is decided before ``min_inputs`` inputs were answered by both models.
3. **latency**: the candidate's median time per input must be within ``latency_factor``
   times the serving model's on the same batches (plus ``LATENCY_SLACK_S``, so that
   microsecond models are not judged on scheduler noise).
4. **accuracy** (takes precedence over agreement): when at least ``min_inputs`` of the
   compared inputs carry a true label (the input's ``label`` header, as replayed inputs
   have), the candidate is promoted when its accuracy on them is at least the serving
   model's minus ``accuracy_margin``, else rejected. A retrained model that fixes drift
   disagrees with the drifted serving model: agreement alone would reject it.
5. while some labels arrive but fewer than ``min_inputs``, the decision waits for them up
   to ``LABEL_WAIT_FACTOR`` x ``min_inputs`` compared inputs;
6. **agreement**: otherwise the candidate is promoted when its top label equals the
   serving model's on at least ``agreement`` of the compared inputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stream.bounded import read_bounded
from stream.exceptions import BundleError
from stream.registry import is_valid_component

logger = logging.getLogger(__name__)

Result = Literal["promoted", "rejected"]
#: Why a candidate was promoted (accuracy, agreement) or rejected (any of them).
Reason = Literal["accuracy", "agreement", "errors", "latency", "input_mismatch"]
RESULTS: tuple[Result, ...] = ("promoted", "rejected")
REASONS: tuple[Reason, ...] = ("accuracy", "agreement", "errors", "latency", "input_mismatch")
#: Seconds per input a candidate may be slower than ``latency_factor`` allows.
LATENCY_SLACK_S = 0.0005
#: While labels arrive but are fewer than min_inputs, wait up to this many x min_inputs.
LABEL_WAIT_FACTOR = 5
#: Per-input latencies kept for the medians (the most recent ones).
LATENCY_WINDOW = 1000


@dataclass(frozen=True, kw_only=True)
class Gates:
    """The promotion policy's settings (``--shadow-*`` options of the agent)."""

    min_inputs: int = 200
    agreement: float = 0.9
    accuracy_margin: float = 0.02
    latency_factor: float = 3.0
    max_errors: int = 0


@dataclass(frozen=True)
class Decision:
    """The policy's verdict on a candidate, with the numbers it rests on."""

    result: Result
    reason: Reason
    detail: str
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class ShadowStats:
    """What the shadow saw of one candidate: comparisons, labels, errors, latencies."""

    inputs: int = 0
    agreed: int = 0
    labelled: int = 0
    candidate_correct: int = 0
    serving_correct: int = 0
    errors: int = 0
    confidence_sum: float = 0.0
    candidate_latency: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    serving_latency: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

    def add_errors(self, n: int) -> None:
        self.errors += n

    def add_batch(
        self,
        *,
        candidate_scores: np.ndarray,
        candidate_labels: Sequence[str],
        serving_labels: Sequence[str | None],
        true_labels: Sequence[str | None],
        candidate_s_per_input: float,
        serving_s_per_input: float,
    ) -> int:
        """One batch answered by the candidate; returns the inputs compared.

        ``serving_labels[i]`` is the serving model's top label for input ``i`` (None when
        it gave no usable output: not compared). Rows of ``candidate_scores`` that are not
        finite, or a shape that is not ``(inputs, len(candidate_labels))``, count as errors.
        """
        n = len(serving_labels)
        y = np.asarray(candidate_scores)
        classes = len(candidate_labels)
        if (
            y.ndim != 2
            or y.shape[0] != n
            or y.shape[1] != classes
            or classes == 0
            or not np.issubdtype(y.dtype, np.number)
        ):
            self.errors += n
            return 0
        y = y.astype(np.float64, copy=False)
        finite = np.isfinite(y).all(axis=1)
        self.errors += int(n - finite.sum())
        best = y.argmax(axis=1).tolist()
        top = y.max(axis=1).tolist()
        compared = 0
        for i in range(n):
            served = serving_labels[i]
            if not finite[i] or served is None:
                continue
            compared += 1
            label = candidate_labels[best[i]]
            self.agreed += label == served
            self.confidence_sum += top[i]
            truth = true_labels[i] if i < len(true_labels) else None
            if truth is not None:
                self.labelled += 1
                self.candidate_correct += label == truth
                self.serving_correct += served == truth
        self.inputs += compared
        if compared and _finite_nonneg(candidate_s_per_input, serving_s_per_input):
            self.candidate_latency.append(candidate_s_per_input)
            self.serving_latency.append(serving_s_per_input)
        return compared

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.inputs if self.inputs else None

    @property
    def mean_confidence(self) -> float | None:
        return self.confidence_sum / self.inputs if self.inputs else None

    @property
    def candidate_accuracy(self) -> float | None:
        return self.candidate_correct / self.labelled if self.labelled else None

    @property
    def serving_accuracy(self) -> float | None:
        return self.serving_correct / self.labelled if self.labelled else None

    def latency_p50(self) -> tuple[float | None, float | None]:
        """Median seconds per input of (candidate, serving)."""
        return _median(self.candidate_latency), _median(self.serving_latency)

    def summary(self) -> dict[str, Any]:
        cand_p50, serv_p50 = self.latency_p50()
        return {
            "inputs": self.inputs,
            "labelled": self.labelled,
            "errors": self.errors,
            "agreement": _round(self.agreement),
            "mean_confidence": _round(self.mean_confidence),
            "candidate_accuracy": _round(self.candidate_accuracy),
            "serving_accuracy": _round(self.serving_accuracy),
            "candidate_p50_s": _round(cand_p50, 7),
            "serving_p50_s": _round(serv_p50, 7),
        }


def judge(stats: ShadowStats, gates: Gates) -> Decision | None:
    """The decision on the candidate, or None while the evidence is not enough (see the
    module docstring for the rule)."""
    if stats.errors > gates.max_errors:
        detail = f"{stats.errors} unusable outputs (allowed: {gates.max_errors})"
        return Decision("rejected", "errors", detail, stats.summary())
    if stats.inputs < gates.min_inputs:
        return None
    cand_p50, serv_p50 = stats.latency_p50()
    if cand_p50 is not None and serv_p50 is not None:
        limit = gates.latency_factor * serv_p50 + LATENCY_SLACK_S
        if cand_p50 > limit:
            detail = (
                f"median {cand_p50 * 1e3:.3f} ms per input, over {gates.latency_factor:g} x "
                f"the serving model's {serv_p50 * 1e3:.3f} ms"
            )
            return Decision("rejected", "latency", detail, stats.summary())
    cand_acc, serv_acc = stats.candidate_accuracy, stats.serving_accuracy
    if stats.labelled >= gates.min_inputs and cand_acc is not None and serv_acc is not None:
        detail = (
            f"accuracy {cand_acc:.4f} vs serving {serv_acc:.4f} on {stats.labelled} labelled "
            f"inputs (margin {gates.accuracy_margin:g})"
        )
        ok = cand_acc >= serv_acc - gates.accuracy_margin
        return Decision("promoted" if ok else "rejected", "accuracy", detail, stats.summary())
    if stats.labelled and stats.inputs < LABEL_WAIT_FACTOR * gates.min_inputs:
        return None  # labels arrive: wait for enough of them rather than judge on agreement
    agreement = stats.agreement or 0.0
    detail = (
        f"agreement {agreement:.4f} with the serving model on {stats.inputs} inputs "
        f"(needed {gates.agreement:g})"
    )
    ok = agreement >= gates.agreement
    return Decision("promoted" if ok else "rejected", "agreement", detail, stats.summary())


def _median(values: Sequence[float]) -> float | None:
    return float(np.median(np.asarray(values))) if len(values) else None


def _finite_nonneg(*values: float) -> bool:
    return all(math.isfinite(v) and v >= 0 for v in values)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


# ------------------------------------------------------------------ the decision log

PROMOTIONS_SUBDIR = "promotions"
#: Decisions kept per model (the most recent ones).
MAX_DECISIONS = 32
_MAX_LOG_BYTES = 256 * 1024


class DecisionLog:
    """``STATE_DIR/promotions/<model>.json``: the recent decisions on candidates, so a
    rejected version is not shadowed again after a restart (``--pin`` still runs it; delete
    the file to try it again). A file that cannot be parsed is ignored with an error."""

    def __init__(self, state_dir: Path | str) -> None:
        self.folder = Path(state_dir) / PROMOTIONS_SUBDIR
        self._cache: dict[str, list[dict[str, Any]]] = {}

    def path(self, model: str) -> Path:
        if is_valid_component(model):
            return self.folder / f"{model}.json"
        return self.folder / f"{hashlib.sha256(model.encode()).hexdigest()[:32]}.json"

    def decisions(self, model: str | None) -> list[dict[str, Any]]:
        if model is None:
            return []
        if model not in self._cache:
            self._cache[model] = self._read(model)
        return self._cache[model]

    def rejected(self, model: str | None) -> set[str]:
        """Versions of ``model`` rejected (and not promoted since)."""
        out: set[str] = set()
        for d in self.decisions(model):
            version = d.get("version")
            if isinstance(version, str):
                if d.get("result") == "rejected":
                    out.add(version)
                else:
                    out.discard(version)
        return out

    def record(self, model: str, version: str, decision: Decision) -> dict[str, Any]:
        entry = {
            "version": version,
            "result": decision.result,
            "reason": decision.reason,
            "detail": decision.detail,
            "stats": decision.stats,
            "at": int(time.time() * 1000),
        }
        kept = [*self.decisions(model), entry][-MAX_DECISIONS:]
        self._cache[model] = kept
        path = self.path(model)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            try:
                with os.fdopen(fd, "w") as fh:
                    json.dump({"model": model, "decisions": kept}, fh, indent=1)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as exc:
            logger.error(
                'cannot save the promotion decision path="%s" error="%s": it holds until the '
                "agent restarts; make --state-dir writable",
                path,
                exc,
            )
        return entry

    def _read(self, model: str) -> list[dict[str, Any]]:
        path = self.path(model)
        try:
            data = json.loads(read_bounded(path, max_bytes=_MAX_LOG_BYTES, what="promotions"))
            decisions = data["decisions"]
            if not isinstance(decisions, list):
                raise TypeError(decisions)
            return [d for d in decisions if isinstance(d, dict)][-MAX_DECISIONS:]
        except FileNotFoundError:
            return []
        except (BundleError, ValueError, TypeError, KeyError, RecursionError) as exc:
            logger.error(
                'ignoring the promotion decisions path="%s" error="%s"; delete the file to '
                "silence this",
                path,
                exc,
            )
            return []
