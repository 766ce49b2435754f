"""On-device monitoring: how confident the model is, and whether its inputs drifted.

Per model version the agent keeps a bounded sliding summary of the last ``window`` inputs
it answered (numpy only, a few hundred KB):

* the **top-class score** of each result: a cumulative histogram (Prometheus buckets),
  the share of the window below ``low_confidence``, and the PSI of the window's score
  distribution against the test split's (the manifest's ``reference.score``);
* per input channel, the **bin counts** of each input's values on the reference's bins
  (at most :data:`MAX_VALUES_PER_CHANNEL` values per channel and input, evenly strided).
  The **drift score** is the Population Stability Index of the window against the
  training data, per channel, and the largest of the channels:

  ``PSI = sum over bins of (a - e) * ln(a / e)``

  with ``e`` the training share of a bin, ``a`` the window's, both floored at
  :data:`PSI_EPSILON` (empty bins). It is 0 for identical distributions and grows with any
  shift; the usual reading is < 0.1 no change, 0.1-0.25 moderate, > 0.25 significant
  (Yurdakul, "Statistical properties of the population stability index", 2018). It is
  exported once :data:`MIN_INPUTS` inputs are in the window.

The pipeline calls :meth:`Monitoring.batch` once per inferred batch (vectorised: a few
numpy calls per batch, no loop over the inputs) and :meth:`Monitoring.publish` from its
housekeeping; the metrics read the published snapshots (:class:`MonitorSnapshot`), so a
scrape never touches the arrays the pipeline writes. Sample capture
(:mod:`edge_agent.sampling`) is fed from the same batch. A bundle without reference
statistics gets the confidence metrics but no drift score.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.delivery import DeliveryFailed
from stream.reference import SCORE_EDGES, Reference

if TYPE_CHECKING:
    from edge_agent.batching import Pending
    from edge_agent.config import AgentConfig
    from edge_agent.delivery import Delivery
    from edge_agent.metrics import AgentMetrics
    from edge_agent.sampling import SampleCapture

logger = logging.getLogger(__name__)

#: Inputs in the sliding window (the ``--monitor-window`` default).
DEFAULT_WINDOW = 1000
#: Values of one channel binned per input at most (an image's pixels are strided to this).
MAX_VALUES_PER_CHANNEL = 1024
#: The per-input bin counts of one model version take at most this much memory.
MEMORY_BUDGET_BYTES = 4 << 20
#: Floor of a bin's share in the PSI (an empty bin would be ln(0)).
PSI_EPSILON = 1e-4
#: The drift score is exported once the window holds this many inputs (or is full).
MIN_INPUTS = 100
#: Upper bounds of the confidence histogram's buckets (Prometheus ``le``).
CONFIDENCE_BUCKETS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
#: Model versions monitored at once (the serving one and the previous): bounded labels.
KEEP_VERSIONS = 2
#: At most one log line about a failing monitor every this many seconds.
LOG_EVERY_S = 60.0

_BUCKETS = np.asarray(CONFIDENCE_BUCKETS)
_SCORE_EDGES = np.asarray(SCORE_EDGES)


def psi(expected: np.ndarray, actual: np.ndarray, eps: float = PSI_EPSILON) -> np.ndarray:
    """Population Stability Index along the last axis; shares floored at ``eps``.

    Each term ``(a - e) * ln(a / e)`` is >= 0, so the result is >= 0 (0 when equal).
    """
    e = np.maximum(np.asarray(expected, dtype=np.float64), eps)
    a = np.maximum(np.asarray(actual, dtype=np.float64), eps)
    out: np.ndarray = ((a - e) * np.log(a / e)).sum(axis=-1)
    return out


def shares(counts: np.ndarray) -> np.ndarray:
    """Counts -> shares along the last axis (all zeros stay zeros)."""
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum(axis=-1, keepdims=True)
    out: np.ndarray = c / np.maximum(total, 1.0)
    return out


def clean_scores(scores: np.ndarray) -> np.ndarray:
    """Top-class scores as float64 in [0, 1]: NaN counts as 0 (no confidence)."""
    s = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0, posinf=1.0, neginf=0.0)
    out: np.ndarray = np.clip(s, 0.0, 1.0)
    return out


class InputBinner:
    """Per-input, per-channel bin counts of raw inputs on a reference's bins."""

    def __init__(self, reference: Reference, *, max_values: int = MAX_VALUES_PER_CHANNEL) -> None:
        self.channels = len(reference.channels)
        self.bins = max(len(c.proportions) for c in reference.channels)
        self.max_values = max_values
        self.expected = np.zeros((self.channels, self.bins))
        for c, ch in enumerate(reference.channels):
            self.expected[c, : len(ch.proportions)] = ch.proportions
        self._edges = [np.asarray(ch.edges, dtype=np.float64) for ch in reference.channels]
        # uint8 pixels take 256 values: one bin lookup table per channel.
        pixels = np.arange(256, dtype=np.float64)
        self._tables = np.stack(
            [np.searchsorted(e, pixels, side="right") for e in self._edges]
        ).astype(np.intp)
        self._one_table = bool((self._tables == self._tables[0]).all())

    def counts(self, x: np.ndarray) -> np.ndarray | None:
        """(N, ..., channels) inputs -> (N, channels, bins) counts; None if not that shape."""
        x = np.asarray(x)
        if x.ndim < 2 or x.shape[-1] != self.channels or len(x) == 0:
            return None
        n, c, b = len(x), self.channels, self.bins
        flat = x.reshape(n, -1, c)
        if flat.shape[1] > self.max_values:
            step = -(-flat.shape[1] // self.max_values)
            flat = flat[:, ::step]
        if x.dtype == np.uint8:
            if self._one_table:
                idx = np.take(self._tables[0], flat)
            else:
                idx = np.stack([np.take(self._tables[i], flat[..., i]) for i in range(c)], -1)
        else:
            idx = np.empty(flat.shape, dtype=np.intp)
            for i in range(c):
                # NaN sorts last: it lands in the top bin, like +inf (the decoders refuse both).
                idx[..., i] = np.searchsorted(self._edges[i], flat[..., i], side="right")
        offsets = (np.arange(n)[:, None, None] * c + np.arange(c)[None, None, :]) * b
        counts = np.bincount((idx + offsets).ravel(), minlength=n * c * b)
        out: np.ndarray = counts.reshape(n, c, b)
        return out

    def input_drift(self, counts: np.ndarray) -> np.ndarray:
        """Each input's own PSI against the reference (the largest over its channels)."""
        out: np.ndarray = psi(self.expected, shares(counts)).max(axis=-1)
        return out


def _push(ring: np.ndarray, pos: int, rows: np.ndarray) -> int:
    """Write ``rows`` into the ring buffer from ``pos`` on; returns the next position."""
    size, n = len(ring), len(rows)
    if n >= size:
        ring[:] = rows[-size:]
        return 0
    end = pos + n
    if end <= size:
        ring[pos:end] = rows
    else:
        k = size - pos
        ring[pos:] = rows[:k]
        ring[: end - size] = rows[k:]
    return end % size


@dataclass(frozen=True, slots=True)
class MonitorSnapshot:
    """What the metrics export for one model version (computed by :meth:`ModelMonitor.snapshot`)."""

    model: str
    version: str
    #: Inputs in the sliding window.
    inputs: int
    #: Cumulative counts per confidence bucket (``le`` of :data:`CONFIDENCE_BUCKETS`, +Inf).
    buckets: tuple[int, ...]
    #: Results observed and the sum of their scores (the histogram's _count and _sum).
    count: int
    total: float
    low_confidence_ratio: float | None
    #: PSI of the window's inputs against the training data (largest channel); None
    #: without a reference or before :data:`MIN_INPUTS`.
    drift: float | None
    #: PSI per channel (same conditions as ``drift``).
    channel_drift: tuple[float, ...]
    #: PSI of the window's score distribution against the test split's.
    confidence_drift: float | None


@dataclass(slots=True)
class Observation:
    """One batch as the monitor saw it: what sample capture chooses from."""

    scores: np.ndarray
    low: np.ndarray
    #: (N, channels, bins) bin counts, None without a reference.
    counts: np.ndarray | None
    #: The window's drift score was above the threshold at the last publish.
    drifting: bool
    binner: InputBinner | None

    def input_drift(self, rows: np.ndarray | None = None) -> np.ndarray | None:
        """The inputs' own drift scores (of ``rows``, else all); None without a reference."""
        if self.counts is None or self.binner is None:
            return None
        counts = self.counts if rows is None else self.counts[rows]
        return self.binner.input_drift(counts)


class ModelMonitor:
    """The sliding summary of one model version. Not thread-safe: one writer (the pipeline)."""

    def __init__(
        self,
        *,
        model: str,
        version: str,
        reference: Reference | None,
        window: int = DEFAULT_WINDOW,
        low_confidence: float = 0.5,
        drift_threshold: float = 0.25,
    ) -> None:
        if window < 1:
            msg = f"window must be >= 1 inputs, got {window}"
            raise ValueError(msg)
        self.model = model
        self.version = version
        self.window = window
        self.low_confidence = low_confidence
        self.drift_threshold = drift_threshold
        self.binner = InputBinner(reference) if reference is not None else None
        rows = window
        if self.binner is not None:
            row_bytes = self.binner.channels * self.binner.bins * 2
            rows = max(1, min(window, MEMORY_BUDGET_BYTES // row_bytes))
            self._counts = np.zeros((rows, self.binner.channels, self.binner.bins), np.uint16)
        self._cpos = 0
        self._cfilled = 0
        self._scores = np.zeros(window, dtype=np.float32)
        self._spos = 0
        self._sfilled = 0
        self._buckets = np.zeros(len(CONFIDENCE_BUCKETS) + 1, dtype=np.int64)
        self._sum = 0.0
        self.results = 0
        score = reference.score if reference is not None else None
        self._expected_scores = None if score is None else np.asarray(score.proportions)
        #: The drift score at the last :meth:`snapshot` (what :attr:`drifting` judges).
        self.drift: float | None = None

    @property
    def drifting(self) -> bool:
        return self.drift is not None and self.drift >= self.drift_threshold

    def observe(self, x: np.ndarray | None, scores: np.ndarray) -> Observation:
        """Add one batch: raw inputs ``x`` (N, ..., channels) and top-class ``scores`` (N,)."""
        s = clean_scores(scores)
        self._spos = _push(self._scores, self._spos, s.astype(np.float32))
        self._sfilled = min(self.window, self._sfilled + len(s))
        self._buckets += np.bincount(
            np.searchsorted(_BUCKETS, s, side="left"), minlength=len(_BUCKETS) + 1
        )
        self._sum += float(s.sum())
        self.results += len(s)
        counts = None
        if self.binner is not None and x is not None:
            counts = self.binner.counts(x)
            if counts is not None:
                # A count is at most MAX_VALUES_PER_CHANNEL (1024): uint16 holds it.
                self._cpos = _push(self._counts, self._cpos, counts.astype(np.uint16))
                self._cfilled = min(len(self._counts), self._cfilled + len(counts))
        return Observation(
            scores=s,
            low=s < self.low_confidence,
            counts=counts,
            drifting=self.drifting,
            binner=self.binner,
        )

    def snapshot(self) -> MonitorSnapshot:
        """The exported view of the window (and the drift score sample capture judges by)."""
        n = self._sfilled
        recent = self._scores[:n]
        low = float((recent < self.low_confidence).mean()) if n else None
        confidence_drift = None
        if self._expected_scores is not None and n >= min(MIN_INPUTS, self.window):
            bins = np.searchsorted(_SCORE_EDGES, recent, side="right")
            hist = np.bincount(bins, minlength=len(_SCORE_EDGES) + 1)
            confidence_drift = float(psi(self._expected_scores, shares(hist)))
        drift: float | None = None
        channels: tuple[float, ...] = ()
        enough = self._cfilled >= min(MIN_INPUTS, len(self._counts)) if self.binner else False
        if self.binner is not None and enough:
            hist = self._counts[: self._cfilled].sum(axis=0, dtype=np.int64)
            per_channel = psi(self.binner.expected, shares(hist))
            channels = tuple(float(v) for v in per_channel)
            drift = max(channels)
        self.drift = drift
        return MonitorSnapshot(
            model=self.model,
            version=self.version,
            inputs=max(n, self._cfilled),
            buckets=tuple(int(v) for v in np.cumsum(self._buckets)),
            count=self.results,
            total=self._sum,
            low_confidence_ratio=low,
            drift=drift,
            channel_drift=channels,
            confidence_drift=confidence_drift,
        )


class Monitoring:
    """The monitors of the versions served recently, and sample capture fed from them."""

    def __init__(
        self,
        *,
        window: int = DEFAULT_WINDOW,
        low_confidence: float = 0.5,
        drift_threshold: float = 0.25,
        metrics: AgentMetrics | None = None,
        capture: SampleCapture | None = None,
        keep: int = KEEP_VERSIONS,
    ) -> None:
        self.window = window
        self.low_confidence = low_confidence
        self.drift_threshold = drift_threshold
        self.metrics = metrics
        self.capture = capture
        self.keep = keep
        self._monitors: OrderedDict[tuple[str, str], ModelMonitor] = OrderedDict()
        self._log_at = 0.0
        #: Monitoring failures (a bug; logged, never raised into the serving path).
        self.errors = 0

    def monitor(self, manifest: Any) -> ModelMonitor:
        """The monitor of ``manifest``'s version (made on first use; oldest dropped)."""
        key = (manifest.name, manifest.version)
        mon = self._monitors.get(key)
        if mon is None:
            mon = ModelMonitor(
                model=manifest.name,
                version=manifest.version,
                reference=getattr(manifest, "reference", None),
                window=self.window,
                low_confidence=self.low_confidence,
                drift_threshold=self.drift_threshold,
            )
            self._monitors[key] = mon
            while len(self._monitors) > self.keep:
                self._monitors.popitem(last=False)
        else:
            self._monitors.move_to_end(key)
        return mon

    def batch(
        self, manifest: Any, items: list[Pending], x: np.ndarray, y: np.ndarray, ok: np.ndarray
    ) -> None:
        """One inferred batch: raw inputs ``x``, outputs ``y`` and the usable rows ``ok``.

        Never raises into the serving path, except :class:`DeliveryFailed` from a sample's
        send (a broker failure the pipeline recovers from like any other).
        """
        try:
            if not ok.all():
                if not ok.any():
                    return
                items = [it for it, good in zip(items, ok.tolist(), strict=True) if good]
                x, y = x[ok], y[ok]
            mon = self.monitor(manifest)
            obs = mon.observe(x, y.reshape(len(y), -1).max(axis=1))
            if self.capture is not None:
                self.capture.offer(manifest, items, y, obs)
        except DeliveryFailed:
            raise
        except Exception:  # noqa: BLE001  monitoring must never stop serving
            self.errors += 1
            now = time.monotonic()
            if now >= self._log_at:
                self._log_at = now + LOG_EVERY_S
                logger.exception("monitoring failed on a batch; serving goes on")

    def refused(self, token: Any, error: Any) -> bool:
        """A send the broker refused for good: True when it was a sample (handled here)."""
        from edge_agent.sampling import SampleSent

        if not isinstance(token, SampleSent):
            return False
        if self.capture is not None:
            self.capture.refused(token, error)
        return True

    def publish(self) -> tuple[MonitorSnapshot, ...]:
        """Recompute the snapshots and hand them to the metrics (housekeeping)."""
        snaps = tuple(m.snapshot() for m in self._monitors.values())
        if self.metrics is not None:
            self.metrics.monitor_snapshots = snaps
        return snaps


def monitoring_for(
    config: AgentConfig, *, delivery: Delivery, metrics: AgentMetrics, source_topic: str
) -> Monitoring | None:
    """The agent's monitoring (and sample capture) from its settings; None when turned off."""
    if not config.monitor:
        return None
    capture = None
    if config.samples_per_s > 0:
        from edge_agent.sampling import SampleCapture

        capture = SampleCapture(
            delivery=delivery,
            metrics=metrics,
            topic=config.samples_topic,
            source_topic=source_topic,
            agent_id=config.agent_id,
            rate_per_s=config.samples_per_s,
            burst=config.samples_burst,
            device_per_min=config.samples_device_per_min,
            random_share=config.samples_random_share,
            max_bytes=config.max_output_bytes,
            max_devices=config.max_devices,
        )
    return Monitoring(
        window=config.monitor_window,
        low_confidence=config.low_confidence,
        drift_threshold=config.drift_threshold,
        metrics=metrics,
        capture=capture,
    )
