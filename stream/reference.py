"""Reference statistics of a model's training data: the manifest's optional ``reference``.

The trainer summarises the data a model was trained on (``trainer/reference.py``) and the
agent compares what it sees in the field against that summary
(``edge_agent/monitoring.py``): both read this one format. Per input channel, the values
are binned (bin edges from the training data) and the share of training values in each
bin is kept, with the channel's mean and standard deviation; for the model's outputs, the
distribution of the top-class score over the test split, on fixed bins of [0, 1].

Bins are half-open intervals around the *interior* edges ``e_1 < ... < e_{B-1}``:
``(-inf, e_1), [e_1, e_2), ..., [e_{B-1}, +inf)``, so every value, however large, falls in
one of the ``B`` bins (``numpy.searchsorted(edges, v, side="right")``).

A manifest without ``reference`` (bundles written before it existed) still loads: it has
no drift score. Malformed statistics make the manifest malformed (:class:`BundleError`),
like any other field: the trainer wrote them and the signature covers them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from stream.exceptions import BundleError

ReferenceKind = Literal["image", "sequence"]
#: Most bins per channel a manifest may carry (the trainer writes 10 or 16).
MAX_BINS = 64
#: Most channels a reference may describe (keeps a manifest far below its 1 MiB cap).
MAX_CHANNELS = 1024
#: Interior edges of the top-class score bins: 20 bins of width 0.05 over [0, 1].
SCORE_EDGES: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))
#: How far the shares of one histogram may sum away from 1.
_SUM_TOLERANCE = 1e-3


def _floats(what: str, values: Any, *, min_len: int, max_len: int) -> list[float]:
    if not isinstance(values, list) or not min_len <= len(values) <= max_len:
        msg = f"reference {what} must be a list of {min_len}..{max_len} numbers, got {values!r}"
        raise ValueError(msg)
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            msg = f"reference {what} must hold finite numbers, got {v!r}"
            raise ValueError(msg)
        out.append(float(v))
    return out


def _histogram(what: str, edges: Any, proportions: Any) -> tuple[list[float], list[float]]:
    """Validated interior edges (strictly increasing) and shares (>= 0, summing to 1)."""
    e = _floats(f"{what} edges", edges, min_len=0, max_len=MAX_BINS - 1)
    p = _floats(f"{what} proportions", proportions, min_len=1, max_len=MAX_BINS)
    if len(p) != len(e) + 1:
        msg = (
            f"reference {what}: {len(e)} interior edges need {len(e) + 1} proportions, got {len(p)}"
        )
        raise ValueError(msg)
    if any(b <= a for a, b in zip(e, e[1:], strict=False)):
        msg = f"reference {what} edges must be strictly increasing, got {e}"
        raise ValueError(msg)
    if any(v < 0 for v in p) or abs(sum(p) - 1.0) > _SUM_TOLERANCE:
        msg = f"reference {what} proportions must be >= 0 and sum to 1, got {p}"
        raise ValueError(msg)
    return e, p


def _count(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        msg = f"reference {what} must be an integer >= 0, got {value!r}"
        raise ValueError(msg)
    return value


@dataclass(frozen=True, kw_only=True)
class ChannelReference:
    """The training values of one input channel: bin edges, shares per bin, mean, std."""

    edges: list[float]
    proportions: list[float]
    mean: float
    std: float

    @classmethod
    def from_dict(cls, data: dict[str, Any], index: int) -> ChannelReference:
        what = f"channel {index}"
        edges, proportions = _histogram(what, data["edges"], data["proportions"])
        mean, std = _floats(f"{what} mean/std", [data["mean"], data["std"]], min_len=2, max_len=2)
        if std < 0:
            msg = f"reference {what} std must be >= 0, got {std}"
            raise ValueError(msg)
        return cls(edges=edges, proportions=proportions, mean=mean, std=std)

    def to_dict(self) -> dict[str, Any]:
        return {
            "edges": list(self.edges),
            "proportions": list(self.proportions),
            "mean": self.mean,
            "std": self.std,
        }


@dataclass(frozen=True, kw_only=True)
class ScoreReference:
    """The top-class score of the model on its test split, binned on :data:`SCORE_EDGES`."""

    edges: list[float]
    proportions: list[float]
    #: Test inputs summarised.
    samples: int

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreReference:
        edges, proportions = _histogram("score", data["edges"], data["proportions"])
        if edges and not (0.0 < edges[0] and edges[-1] < 1.0):
            msg = f"reference score edges must lie inside (0, 1), got {edges}"
            raise ValueError(msg)
        return cls(
            edges=edges, proportions=proportions, samples=_count("score samples", data["samples"])
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "edges": list(self.edges),
            "proportions": list(self.proportions),
            "samples": self.samples,
        }

    def share_below(self, threshold: float) -> float:
        """The share of test scores below ``threshold`` (linear within a bin)."""
        lo = 0.0
        total = 0.0
        for i, share in enumerate(self.proportions):
            hi = self.edges[i] if i < len(self.edges) else 1.0
            if threshold >= hi:
                total += share
            elif threshold > lo:
                total += share * (threshold - lo) / (hi - lo)
            lo = hi
        return min(max(total, 0.0), 1.0)


@dataclass(frozen=True, kw_only=True)
class Reference:
    """The manifest's ``reference``: per-channel input statistics and the score distribution."""

    kind: ReferenceKind
    #: Training inputs summarised (images or windows).
    samples: int
    channels: list[ChannelReference]
    score: ScoreReference | None = None

    @classmethod
    def from_dict(cls, data: Any) -> Reference:
        """Parse and validate; :class:`BundleError` naming the field when malformed."""
        try:
            if not isinstance(data, dict):
                msg = f"reference must be a JSON object, got {type(data).__name__}"
                raise ValueError(msg)
            kind = data["kind"]
            if kind not in ("image", "sequence"):
                msg = f"reference kind must be 'image' or 'sequence', got {kind!r}"
                raise ValueError(msg)
            raw = data["channels"]
            if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_CHANNELS:
                msg = f"reference channels must be a list of 1..{MAX_CHANNELS} objects"
                raise ValueError(msg)
            channels = [ChannelReference.from_dict(c, i) for i, c in enumerate(raw)]
            score = data.get("score")
            return cls(
                kind=kind,
                samples=_count("samples", data["samples"]),
                channels=channels,
                score=None if score is None else ScoreReference.from_dict(score),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            msg = f"manifest 'reference' is malformed ({exc}); re-export the bundle"
            raise BundleError(msg) from exc

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "samples": self.samples,
            "channels": [c.to_dict() for c in self.channels],
        }
        if self.score is not None:
            out["score"] = self.score.to_dict()
        return out

    def check_fits(self, kind: str, channels: int) -> None:
        """:class:`BundleError` unless the reference describes inputs of this kind and width."""
        if self.kind != kind or len(self.channels) != channels:
            msg = (
                f"manifest 'reference' describes {len(self.channels)} {self.kind} channel(s) "
                f"but the model takes {channels} {kind} channel(s); re-export the bundle"
            )
            raise BundleError(msg)
