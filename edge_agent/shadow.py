"""Shadow inference: a candidate version answers the serving model's inputs off the serving path.

The pipeline hands every inferred batch to :meth:`Shadow.offer` *after* its results went to
the producer; ``offer`` only picks the share of inputs to shadow (``--shadow-share``),
notes the serving model's top labels, the inputs' true labels (the ``label`` header) and
time per input, and puts the job on a bounded queue (``--shadow-queue`` batches): when the
queue is full the inputs are dropped and counted, never waited for. A worker thread runs
the candidate on them **on spare time only**: it starts a job only while the serving loop
waits for input (:attr:`Shadow.spare`, set by the pipeline around its consumer poll), so a
busy agent sheds shadow work (dropped, counted) instead of serving slower. The candidate
runs with its own preprocessing (and, for an integer image model, its own quantization
table); the worker feeds :class:`edge_agent.promotion.ShadowStats`, exports the
``edge_agent_shadow_*`` metrics and asks :func:`edge_agent.promotion.judge` for a
decision. Nothing the candidate does reaches a result: an exception, NaN scores or a wrong
shape only count as candidate errors. The pipeline polls :attr:`Shadow.decision` and has
the model store promote or reject (docs/models.md, "Shadow and promote").

The candidate's runtime is used only by the worker thread until the shadow stops; then it
is either promoted (served by the pipeline thread) or closed by :meth:`Shadow.close`.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_agent.answers import infer_batch, input_table
from edge_agent.batching import Pending
from edge_agent.promotion import Decision, Gates, ShadowStats, judge
from stream import topics
from stream.codecs import headers_dict
from stream.preprocessing import ImagePreprocessing

logger = logging.getLogger(__name__)

#: Seconds between two log lines about candidate errors.
_ERROR_LOG_S = 10.0
#: How long stopping waits for the candidate's batch in flight (a model that hangs is left
#: to its daemon thread, its runtime never closed under it).
STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class _Job:
    """A shadowed batch as the serving thread left it (the worker reads labels from it)."""

    x: np.ndarray
    y: np.ndarray
    ok: np.ndarray
    headers: list[Any]
    labels: list[str]
    serving_s_per_input: float

    def serving_labels(self) -> list[str | None]:
        """The serving model's top label per input (None: it gave no usable output)."""
        n, y, labels = len(self.headers), self.y, self.labels
        if y.ndim != 2 or y.shape[0] != n:
            return [None] * n
        best = y.argmax(axis=1).tolist()
        return [
            labels[b] if good and b < len(labels) else None
            for b, good in zip(best, self.ok.tolist(), strict=True)
        ]

    def true_labels(self) -> list[str | None]:
        return [headers_dict(h).get(topics.H_LABEL) for h in self.headers]


def input_shape(prep: Any) -> tuple[int, ...]:
    """The shape of one raw input the pipeline builds for ``prep`` (an image or a window)."""
    if isinstance(prep, ImagePreprocessing):
        return (prep.height, prep.width, prep.channels)
    return (prep.window, prep.channels)


class Shadow:
    """Runs ``candidate`` (a :class:`edge_agent.model_store.LoadedModel`) in shadow."""

    def __init__(
        self,
        *,
        candidate: Any,
        serving_prep: Any,
        gates: Gates,
        share: float,
        metrics: Any,
        queue_batches: int = 8,
        seed: int | None = None,
    ) -> None:
        self.candidate = candidate
        self.gates = gates
        self.share = share
        self.metrics = metrics
        self.stats = ShadowStats()
        #: The policy's verdict, set once by the worker (or at once for unusable inputs).
        self.decision: Decision | None = None
        self.dropped = 0
        m = candidate.manifest
        self._labels = list(m.labels)
        self._prep = candidate.preprocessing
        self._table = input_table(candidate, self._prep)
        self._shape = input_shape(self._prep)
        self._random = random.Random(seed)  # noqa: S311  sampling, not security
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=max(queue_batches, 1))
        self._last_error_log = 0.0
        self._stuck = False
        self._stopping = False
        #: Set by the serving loop while it waits for input: the worker runs only then.
        self.spare = threading.Event()
        labels = {"model": m.name, "version": m.version}
        self._m_inputs = metrics.shadow_inputs.labels(**labels)
        self._m_dropped = metrics.shadow_dropped.labels(**labels)
        self._m_errors = metrics.shadow_errors.labels(**labels)
        self._m_latency = metrics.shadow_duration.labels(**labels)
        self._m_agreement = metrics.shadow_agreement.labels(**labels)
        self._m_confidence = metrics.shadow_confidence.labels(**labels)
        self._m_acc_candidate = metrics.shadow_accuracy.labels(**labels, role="candidate")
        self._m_acc_serving = metrics.shadow_accuracy.labels(**labels, role="serving")
        metrics.shadow_candidate.labels(**labels).set(1)
        want = input_shape(serving_prep)
        if want != self._shape or type(serving_prep) is not type(self._prep):
            detail = (
                f"the candidate takes inputs shaped {self._shape}, the serving model "
                f"{want}: it cannot answer the same inputs (run it with --pin, or "
                "--promotion direct)"
            )
            self.decision = Decision("rejected", "input_mismatch", detail, self.stats.summary())
            self._thread: threading.Thread | None = None
            return
        self._thread = threading.Thread(target=self._run, name=f"shadow-{m.version}", daemon=True)
        self._thread.start()
        logger.info(
            'shadow started model="%s" version="%s" share=%g min_inputs=%d',
            m.name,
            m.version,
            share,
            gates.min_inputs,
        )

    @property
    def version(self) -> str:
        return str(self.candidate.manifest.version)

    # ------------------------------------------------------------ serving thread

    def offer(
        self,
        items: list[Pending],
        x: np.ndarray,
        y: np.ndarray,
        ok: np.ndarray,
        model: Any,
        infer_s: float,
    ) -> None:
        """A batch the serving ``model`` answered (``y``: its scores, ``ok``: the rows that
        became results): queue the shadowed share for the candidate; never blocks."""
        if self.decision is not None or self._thread is None or not items:
            return
        n = len(items)
        if self.share >= 1.0:
            chosen = list(range(n))
        else:
            chosen = [i for i in range(n) if self._random.random() < self.share]
            if not chosen:
                return
        if x.shape[1:] != self._shape or y.shape[:1] != (n,) or ok.shape != (n,):
            return  # the serving model changed geometry under the shadow: not comparable
        labels = model.manifest.labels
        if len(chosen) == n:
            job = _Job(x, y, ok, [it.headers for it in items], labels, infer_s / n)
        else:
            headers = [items[i].headers for i in chosen]
            job = _Job(x[chosen], y[chosen], ok[chosen], headers, labels, infer_s / n)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.dropped += len(chosen)
            self._m_dropped.inc(len(chosen))

    def stop(self) -> None:
        """Stop the worker (the candidate's runtime stays open: it may be promoted)."""
        thread = self._thread
        if thread is None:
            return
        self._thread = None
        self._stopping = True
        while True:  # make room for the stop mark: queued jobs are dropped
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)
        self.spare.set()  # a worker waiting for spare time sees the stop
        thread.join(STOP_TIMEOUT_S)
        if thread.is_alive():
            self._stuck = True
            logger.error(
                'shadow candidate version="%s" did not finish its batch within %.0f s: left '
                "running on its own thread (its interpreter is not released)",
                self.version,
                STOP_TIMEOUT_S,
            )

    def close(self, *, release: bool = True) -> None:
        """Stop the worker and end the candidate's ``shadow_candidate_info`` series; with
        ``release``, close its runtime too (rejected or superseded, not promoted)."""
        self.stop()
        try:
            self.metrics.shadow_candidate.remove(self.candidate.manifest.name, self.version)
        except KeyError:
            pass
        if release and not self._stuck:
            self.candidate.runtime.close()

    # ------------------------------------------------------------- worker thread

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self.spare.wait()
            if self._stopping:
                return
            if self.decision is not None:
                continue
            try:
                self._shadow(job)
            except Exception as exc:  # noqa: BLE001  the worker never dies; it counts as errors
                logger.exception("shadow of version %s failed", self.version)
                self.stats.add_errors(len(job.headers))
                self._count_errors(len(job.headers), exc)
            decision = judge(self.stats, self.gates)
            if decision is not None:
                self.decision = decision

    def _shadow(self, job: _Job) -> None:
        n = len(job.headers)
        t0 = time.perf_counter()
        try:
            y = infer_batch(self.candidate, self._prep, self._table, job.x)
        except Exception as exc:  # noqa: BLE001  a candidate's failure is an error, not a crash
            self.stats.add_errors(n)
            self._count_errors(n, exc)
            return
        elapsed = time.perf_counter() - t0
        before = self.stats.errors
        self.stats.add_batch(
            candidate_scores=y,
            candidate_labels=self._labels,
            serving_labels=job.serving_labels(),
            true_labels=job.true_labels(),
            candidate_s_per_input=elapsed / n,
            serving_s_per_input=job.serving_s_per_input,
        )
        if self.stats.errors > before:
            self._count_errors(self.stats.errors - before, None)
        self._m_inputs.inc(n)
        self._m_latency.observe(elapsed)
        s = self.stats
        if s.agreement is not None:
            self._m_agreement.set(s.agreement)
        if s.mean_confidence is not None:
            self._m_confidence.set(s.mean_confidence)
        if s.candidate_accuracy is not None and s.serving_accuracy is not None:
            self._m_acc_candidate.set(s.candidate_accuracy)
            self._m_acc_serving.set(s.serving_accuracy)

    def _count_errors(self, n: int, exc: BaseException | None) -> None:
        """``n`` candidate outputs were unusable (already in the stats): metric and log."""
        self._m_errors.inc(n)
        now = time.monotonic()
        if now - self._last_error_log >= _ERROR_LOG_S:
            self._last_error_log = now
            logger.warning(
                'shadow candidate version="%s" gave %d unusable outputs so far%s',
                self.version,
                self.stats.errors,
                f": {type(exc).__name__}: {exc}" if exc is not None else "",
            )
