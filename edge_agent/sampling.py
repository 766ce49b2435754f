"""Sample capture: a rate-limited share of the inputs goes to the ``samples`` topic.

Which inputs, per inferred batch (:meth:`SampleCapture.offer`):

1. **Calibration**: while the calibration budget (``random_share`` of the rate) has a
   token, one input of the batch chosen uniformly at random (``random``), so the captured
   set also holds ordinary inputs, not only the hard ones.
2. **Low confidence first**: results whose top-class score is below the monitor's
   ``low_confidence``, least confident first (``low_confidence``).
3. **Then drift**: while the model's input drift score is above its threshold, the other
   inputs of the batch, most unusual first (their own PSI against the reference; ``drift``).

**Bounded.** Every sample takes a token from one bucket (``rate_per_s``, ``burst``): in
any ``t`` seconds at most ``burst + rate_per_s * t`` samples are sent, however many inputs
qualify; a flood of low-confidence inputs only raises
``edge_agent_samples_skipped_total{reason="rate_limited"}``. Each device has its own
bucket too (``device_per_min`` a minute, as many at once), so one chatty or broken device
cannot take the whole budget; at most ``max_devices`` device buckets are kept (least
recently used dropped). The work per batch is a few numpy calls; the Python loop runs
only over the inputs actually examined, at most a few per available token.

A sample is the input exactly as received (an image's bytes and headers; a sensor window,
which spans many messages, as a chunk of its readings with the headers of the message that
completed it) plus the sample headers (:func:`stream.codecs.sample_headers`), keyed by
device id, sent through the same producer as the results, so it is acknowledged before the
input's offset is committed. A sample the broker refuses for good is counted and dropped;
when the topic is missing or not writable, capture pauses for :data:`PAUSE_S`.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from edge_agent.delivery import Delivery
from edge_agent.transport import TransportError
from stream.codecs import encode_chunk, sample_headers

if TYPE_CHECKING:
    from edge_agent.batching import Pending
    from edge_agent.metrics import AgentMetrics
    from edge_agent.monitoring import Observation

logger = logging.getLogger(__name__)

SampleReason = Literal["low_confidence", "drift", "random"]
SAMPLE_REASONS: tuple[str, ...] = get_args(SampleReason)
#: Why a qualifying input was not sent.
SkipReason = Literal["rate_limited", "device_cap", "too_large", "refused", "paused"]
SKIP_REASONS: tuple[str, ...] = get_args(SkipReason)
#: Capture stops this long after the broker said the samples topic is missing or forbidden.
PAUSE_S = 300.0
#: Codes that pause capture (the topic itself is unusable, not one sample).
PAUSE_CODES = ("UNKNOWN_TOPIC_OR_PARTITION", "TOPIC_AUTHORIZATION_FAILED")
#: Room left for the record's framing when checking a sample against ``max_bytes``.
RECORD_OVERHEAD = 512
#: Inputs examined per available token (devices over their cap are skipped).
EXAMINE_PER_TOKEN = 4
LOG_EVERY_S = 60.0


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` held; starts full.

    Over any ``t`` seconds at most ``burst + rate * t`` tokens are taken.
    """

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, *, rate: float, burst: float, now: float) -> None:
        if rate < 0 or burst < 0:
            msg = f"rate and burst must be >= 0, got {rate} and {burst}"
            raise ValueError(msg)
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:  # a clock that goes back adds nothing
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def available(self, now: float) -> int:
        self._refill(now)
        return int(self.tokens)

    def take(self, n: int, now: float) -> int:
        """Take up to ``n`` whole tokens; returns how many were taken."""
        self._refill(now)
        k = max(0, min(n, int(self.tokens)))
        self.tokens -= k
        return k


class DeviceCaps:
    """One :class:`TokenBucket` per device (``per_min`` a minute), least recently used
    dropped beyond ``max_devices`` (a dropped device starts again with a full bucket)."""

    def __init__(self, *, per_min: float, max_devices: int) -> None:
        self.rate = per_min / 60.0
        self.burst = max(1.0, per_min)
        self.max_devices = max_devices
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allows(self, device: str, now: float) -> bool:
        bucket = self._buckets.get(device)
        if bucket is None:
            bucket = TokenBucket(rate=self.rate, burst=self.burst, now=now)
            self._buckets[device] = bucket
            if len(self._buckets) > self.max_devices:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(device)
        return bucket.available(now) >= 1

    def take(self, device: str, now: float) -> None:
        bucket = self._buckets.get(device)
        if bucket is not None:
            bucket.take(1, now)


@dataclass(frozen=True, slots=True)
class SampleSent:
    """A sample in flight: the token :meth:`Delivery.sync` hands back if it is refused."""

    partition: int
    offset: int
    reason: str


class SampleCapture:
    """Chooses, builds and sends the samples of one input topic."""

    def __init__(
        self,
        *,
        delivery: Delivery,
        metrics: AgentMetrics | None,
        topic: str,
        source_topic: str,
        agent_id: str,
        rate_per_s: float,
        burst: int,
        device_per_min: float,
        random_share: float,
        max_bytes: int,
        max_devices: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ) -> None:
        if not 0 <= random_share <= 1:
            msg = f"random_share must be in [0, 1], got {random_share}"
            raise ValueError(msg)
        self.delivery = delivery
        self.metrics = metrics
        self.topic = topic
        self.source_topic = source_topic
        self.agent_id = agent_id
        self.max_bytes = max_bytes
        self.clock = clock
        now = clock()
        self.bucket = TokenBucket(rate=rate_per_s, burst=float(burst), now=now)
        self.calibration = (
            TokenBucket(rate=rate_per_s * random_share, burst=1.0, now=now)
            if random_share > 0
            else None
        )
        self.devices = DeviceCaps(per_min=device_per_min, max_devices=max_devices)
        self._rng = np.random.default_rng(seed)
        self._paused_until = 0.0
        self._log_at = 0.0
        #: Samples sent and skipped, by reason (for tests and the summary line).
        self.sent: dict[str, int] = dict.fromkeys(SAMPLE_REASONS, 0)
        self.skipped: dict[str, int] = dict.fromkeys(SKIP_REASONS, 0)

    # ------------------------------------------------------------------ choose

    def offer(self, manifest: Any, items: list[Pending], y: np.ndarray, obs: Observation) -> int:
        """Send the samples of one batch (``y``: its outputs); returns how many were sent."""
        now = self.clock()
        low = np.flatnonzero(obs.low)
        drift_rows: np.ndarray | None = None
        if obs.drifting:
            drift_rows = np.flatnonzero(~obs.low)
        wanted = len(low) + (0 if drift_rows is None else len(drift_rows))
        if now < self._paused_until:
            self._skip("paused", wanted)
            return 0
        sent = 0
        if self.calibration is not None and self.calibration.available(now) >= 1:
            i = int(self._rng.integers(len(items)))
            if self._send_if_allowed(manifest, items[i], y[i], obs, i, "random", now):
                self.calibration.take(1, now)
                sent += 1
                # Not sent twice: the picked input leaves the other lists.
                low = low[low != i]
                if drift_rows is not None:
                    drift_rows = drift_rows[drift_rows != i]
                wanted = len(low) + (0 if drift_rows is None else len(drift_rows))
        if not wanted:
            return sent
        # Least confident first, then the most drifted of the rest.
        order = low[np.argsort(obs.scores[low], kind="stable")]
        reasons: list[str] = ["low_confidence"] * len(order)
        if drift_rows is not None and len(drift_rows):
            own = obs.input_drift(drift_rows)
            if own is not None:
                drift_rows = drift_rows[np.argsort(-own, kind="stable")]
            order = np.concatenate([order, drift_rows])
            reasons += ["drift"] * len(drift_rows)
        tokens = self.bucket.available(now)
        examined = 0
        budget = tokens * EXAMINE_PER_TOKEN
        for row, reason in zip(order.tolist(), reasons, strict=True):
            if tokens < 1 or examined >= budget or now < self._paused_until:
                break
            examined += 1
            if self._send_if_allowed(manifest, items[row], y[row], obs, row, reason, now):
                sent += 1
                tokens -= 1
        self._skip("rate_limited", len(order) - examined)
        return sent

    def _send_if_allowed(
        self, manifest: Any, it: Pending, row: np.ndarray, obs: Observation, i: int, reason: str,
        now: float,
    ) -> bool:  # fmt: skip
        if not self.devices.allows(it.device_id, now):
            self._skip("device_cap")
            return False
        if self.bucket.available(now) < 1:
            self._skip("rate_limited")
            return False
        if not self._send(manifest, it, row, obs, i, reason):
            return False
        self.bucket.take(1, now)
        self.devices.take(it.device_id, now)
        return True

    # -------------------------------------------------------------------- send

    def _send(
        self, manifest: Any, it: Pending, row: np.ndarray, obs: Observation, i: int, reason: str
    ) -> bool:
        labels = list(manifest.labels)
        probs = np.asarray(row, dtype=np.float64).ravel()
        top = int(np.nanargmax(probs)) if np.isfinite(probs).any() else 0
        drift = obs.input_drift(np.array([i]))
        value = it.value if not it.window else encode_chunk(it.device_id, it.ts or 0, it.x)
        headers = sample_headers(
            list(it.headers or []),
            reason=reason,
            model=manifest.name,
            version=manifest.version,
            label=labels[top] if top < len(labels) else str(top),
            score=float(obs.scores[i]),
            scores={lab: float(p) for lab, p in zip(labels, probs.tolist(), strict=False)},
            drift=None if drift is None else float(drift[0]),
            topic=self.source_topic,
            partition=it.partition,
            offset=it.offset,
            last_offset=it.last_offset,
            agent_id=self.agent_id,
        )
        key = it.device_id.encode("utf-8", "backslashreplace")
        size = len(value or b"") + len(key) + sum(len(n) + len(v) for n, v in headers)
        if size + RECORD_OVERHEAD > self.max_bytes:
            self._skip("too_large")
            return False
        self.delivery.send(
            self.topic, value, key, headers, SampleSent(it.partition, it.offset, reason)
        )
        self.sent[reason] += 1
        if self.metrics is not None:
            self.metrics.samples.labels(reason=reason).inc()
        return True

    # --------------------------------------------------------------- refusals

    def refused(self, token: SampleSent, error: TransportError) -> None:
        """The broker refused a sample for good: count it; pause when the topic is unusable."""
        self._skip("refused")
        now = self.clock()
        if error.code in PAUSE_CODES:
            self._paused_until = now + PAUSE_S
        if now >= self._log_at:
            self._log_at = now + LOG_EVERY_S
            pause = f"; capture paused for {PAUSE_S:.0f} s" if error.code in PAUSE_CODES else ""
            logger.warning(
                '%s[%d] offset=%d: the sample (reason="%s") was refused by the broker '
                '(%s)%s; check that topic "%s" exists and this agent may write to it',
                self.source_topic,
                token.partition,
                token.offset,
                token.reason,
                error,
                pause,
                self.topic,
            )

    def _skip(self, reason: str, n: int = 1) -> None:
        if n <= 0:
            return
        self.skipped[reason] += n
        if self.metrics is not None:
            self.metrics.samples_skipped.labels(reason=reason).inc(n)
