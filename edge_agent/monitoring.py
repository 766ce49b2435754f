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
#: Values of one channel binned per input at most: an input's values are strided down to
#: this (a 100-reading window: every 4th; an 8x8 image: every 2nd pixel). The window of 1000
#: inputs then still holds ~32,000 values per channel, and the cost per input stays small.
MAX_VALUES_PER_CHANNEL = 32
#: The per-input bin counts of one model version take at most this much memory.
MEMORY_BUDGET_BYTES = 4 << 20
#: Floor of a bin's share in the PSI (an empty bin would be ln(0)).
PSI_EPSILON = 1e-4
#: The drift score is exported once the window holds this many inputs (or is full).
MIN_INPUTS = 100
#: Upper bounds of the confidence histogram's buckets (Prometheus ``le``).
CONFIDENCE_BUCKETS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
#: Score batches kept for the histogram between two snapshots at most (then added at once).
MAX_PENDING = 256
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
    s = np.fmax(np.asarray(scores, dtype=np.float64), 0.0)  # fmax: NaN -> 0
    out: np.ndarray = np.minimum(s, 1.0, out=s)
    return out


class InputBinner:
    """Per-input, per-channel bin counts of raw inputs on a reference's bins.

    All channels are binned by one ``searchsorted``: each channel's values are mapped
    monotonically into its own interval ``[2c, 2c + 1]`` (values beyond the outer edges are
    clipped into it, which keeps them in the outer bins), and the edges with them. NaN
    counts in the lowest bin (the decoders refuse NaN; it must not break the count).
    uint8 images use a lookup table per channel instead.
    """

    def __init__(self, reference: Reference, *, max_values: int = MAX_VALUES_PER_CHANNEL) -> None:
        chans = reference.channels
        self.channels = c = len(chans)
        self.bins = b = max(len(ch.proportions) for ch in chans)
        self.max_values = max_values
        self.expected = np.zeros((c, b))
        for i, ch in enumerate(chans):
            self.expected[i, : len(ch.proportions)] = ch.proportions
        scale, shift = np.zeros(c), np.zeros(c)
        edges: list[np.ndarray] = []
        first_edge = np.zeros(c, dtype=np.intp)  # index in the concatenated edges
        for i, ch in enumerate(chans):
            e = np.asarray(ch.edges, dtype=np.float64)
            first_edge[i] = sum(len(x) for x in edges)
            if len(e):
                pad = max((e[-1] - e[0]) * 0.01, abs(e[0]) * 1e-9, 1e-12)
                lo, hi = e[0] - pad, e[-1] + pad
                scale[i] = 1.0 / (hi - lo)
                shift[i] = 2.0 * i - lo * scale[i]
                edges.append(e * scale[i] + shift[i])
            else:  # one bin: every value maps inside the channel's interval
                shift[i] = 2.0 * i + 0.5
        self._scale, self._shift = scale, shift
        self._lo, self._hi = 2.0 * np.arange(c), 2.0 * np.arange(c) + 1.0
        self._edges = np.concatenate(edges) if edges else np.zeros(0)
        # searchsorted over all edges -> index in the (channels, bins) layout.
        self._to_bin = np.arange(c, dtype=np.intp) * b - first_edge
        # uint8 pixels take 256 values: a (channels * 256) table of bin ids.
        pixels = np.arange(256, dtype=np.float64)
        self._table = np.concatenate(
            [
                np.searchsorted(np.asarray(ch.edges, dtype=np.float64), pixels, side="right")
                + i * b
                for i, ch in enumerate(chans)
            ]
        ).astype(np.intp)
        self._pixel_offsets = np.arange(c, dtype=np.intp) * 256

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
            ids = np.take(self._table, flat + self._pixel_offsets)
        else:
            y = flat.astype(np.float64) * self._scale + self._shift
            np.fmax(y, self._lo, out=y)  # NaN -> the lowest bin
            np.fmin(y, self._hi, out=y)
            ids = np.searchsorted(self._edges, y, side="right") + self._to_bin
        ids += (np.arange(n, dtype=np.intp) * (c * b))[:, None, None]
        out: np.ndarray = np.bincount(ids.ravel(), minlength=n * c * b).reshape(n, c, b)
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
        drift_threshold: float = 0.1,
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
        #: Results observed (the histogram's count once :meth:`_flush` ran).
        self.results = 0
        #: Score batches not yet in the histogram: added up at :meth:`snapshot` (or when
        #: :data:`MAX_PENDING` pile up), one bincount for many batches.
        self._pending: list[np.ndarray] = []
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
        s32 = s.astype(np.float32)
        self._spos = _push(self._scores, self._spos, s32)
        self._sfilled = min(self.window, self._sfilled + len(s))
        self._pending.append(s32)
        if len(self._pending) >= MAX_PENDING:
            self._flush()
        counts = None
        if self.binner is not None and x is not None:
            counts = self.binner.counts(x)
            if counts is not None:
                # A count is at most max_values per channel and input: uint16 holds it.
                self._cpos = _push(self._counts, self._cpos, counts.astype(np.uint16))
                self._cfilled = min(len(self._counts), self._cfilled + len(counts))
        return Observation(
            scores=s,
            low=s < self.low_confidence,
            counts=counts,
            drifting=self.drifting,
            binner=self.binner,
        )

    def _flush(self) -> None:
        """Add the pending scores to the cumulative histogram."""
        if not self._pending:
            return
        scores = np.concatenate(self._pending)
        self._pending = []
        self._buckets += np.bincount(
            np.searchsorted(_BUCKETS, scores, side="left"), minlength=len(_BUCKETS) + 1
        )
        self._sum += float(scores.sum(dtype=np.float64))
        self.results += len(scores)

    def snapshot(self) -> MonitorSnapshot:
        """The exported view of the window (and the drift score sample capture judges by)."""
        self._flush()
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
        drift_threshold: float = 0.1,
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
