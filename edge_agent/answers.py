"""How every input gets its answer: inference, output checks, then a result or a dead letter.

A batch that fails is retried one input at a time, so only the inputs that fail alone are
dead-lettered (``inference_error``); outputs that cannot become a result are dead-lettered
(``bad_model_output``, :mod:`edge_agent.outputs`) and counted by the rollback gate; a result
that cannot be encoded is dead-lettered (``internal_error``); a result the broker refuses
for good becomes a dead letter (``undeliverable_result``, :meth:`Answers.answer_refused`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent.batching import Pending
from edge_agent.config import AgentConfig
from edge_agent.deadletters import DeadLetters, DeadLetterSent, Reason
from edge_agent.delivery import Delivery, Refused
from edge_agent.metrics import AgentMetrics
from edge_agent.monitoring import Monitoring
from edge_agent.outputs import OutputGate, usable_rows
from edge_agent.results import encode_results, window_as_npy
from stream import content_types, topics
from stream.preprocessing import ImagePreprocessing

if TYPE_CHECKING:
    from edge_agent.shadow import Shadow

logger = logging.getLogger(__name__)

RESULT_HEADERS = [(topics.H_CONTENT_TYPE, content_types.JSON.encode())]


def input_table(model: Any, prep: Any) -> np.ndarray | None:
    """For an image model (``prep``: its preprocessing), its uint8 pixel -> model input
    table: quantized for an integer input, float32 for a float32 one (else None)."""
    spec = getattr(getattr(model, "runtime", None), "input_spec", None)
    if not isinstance(prep, ImagePreprocessing) or spec is None:
        return None
    if spec.quantized:
        return prep.quantization_table(spec.scale, spec.zero_point, spec.dtype)
    return prep.pixel_table() if spec.dtype == "float32" else None


def infer_batch(model: Any, prep: Any, table: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    """``model``'s scores for the raw batch ``x`` (``table``: see :func:`input_table`).

    An image batch is looked up straight into the interpreter's input tensor: no
    normalized copy of the batch is made (3.5 MB for 32 float32 frames of 96x96x3).
    """
    if table is not None and x.dtype == np.uint8:

        def fill(out: np.ndarray) -> None:
            ImagePreprocessing.apply_table(x, table, out=out)

        return model.runtime.run_filled(len(x), fill)
    return model.runtime.run(prep.apply(x))


class Answers:
    """Runs batches through the serving model and answers every input."""

    def __init__(
        self,
        *,
        config: AgentConfig,
        metrics: AgentMetrics,
        delivery: Delivery,
        deadletters: DeadLetters,
        topic: str,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.delivery = delivery
        self.deadletters = deadletters
        self.topic = topic
        #: The serving model's health: share of unusable outputs (rollback when tripped).
        self.gate = OutputGate()
        #: Results sent (for the summary line and tests).
        self.count = 0
        #: Sees every inferred batch and refused sample (edge_agent/monitoring.py), if set.
        self.monitoring: Monitoring | None = None
        #: The candidate in shadow (edge_agent/shadow.py), offered every answered batch.
        self.shadow: Shadow | None = None

    def run(self, items: list[Pending], model: Any, prep: Any, table: np.ndarray | None) -> None:
        """Infer ``items`` with ``model`` (``table``: uint8 -> quantized input lookup for
        integer image models) and answer each: a result or a dead letter."""
        started = time.time()
        t0 = time.perf_counter()
        try:
            x = np.stack([it.x for it in items])
            y = infer_batch(model, prep, table, x)
        except Exception as exc:  # noqa: BLE001  isolate the input(s) that fail
            if len(items) == 1:
                it = items[0]
                logger.exception(
                    "%s[%d] offset=%d: inference failed", self.topic, it.partition, it.offset
                )
                self.dead_letter_item(it, "inference_error", f"{type(exc).__name__}: {exc}")
                return
            logger.warning("batch of %d failed (%s); retrying one by one", len(items), exc)
            for it in items:
                self.run([it], model, prep, table)
            return
        infer_s = time.perf_counter() - t0
        ok, why = usable_rows(y, len(items), len(model.manifest.labels))
        self.gate.record(ok, [it.device_id for it in items])
        if self.monitoring is not None:
            self.monitoring.batch(model.manifest, items, x, y, ok)
        if ok.all():
            self._emit(items, y, infer_s, started, model)
        else:
            m = model.manifest
            bad = [it for it, good in zip(items, ok.tolist(), strict=True) if not good]
            self.metrics.bad_outputs.labels(model=m.name, version=m.version).inc(len(bad))
            for it in bad:
                self.dead_letter_item(it, "bad_model_output", why)
            if ok.any():
                good = [it for it, g in zip(items, ok.tolist(), strict=True) if g]
                self._emit(good, y[ok], infer_s, started, model)
        if self.shadow is not None:  # after the results went to the producer
            self.shadow.offer(items, x, y, ok, model, infer_s)

    def _emit(
        self, items: list[Pending], y: np.ndarray, infer_s: float, started: float, model: Any
    ) -> None:
        m = model.manifest
        output = self.config.output_topic
        produced_at = int(time.time() * 1000)
        try:
            values, e2e = self._encode(items, y, infer_s, started, model, produced_at)
        except Exception:  # noqa: BLE001  find the input(s) whose result cannot be encoded
            values, e2e, kept = [], [], []
            for i, it in enumerate(items):
                try:
                    v, e = self._encode([it], y[i : i + 1], infer_s, started, model, produced_at)
                except Exception as exc:  # noqa: BLE001
                    logger.exception(
                        "%s[%d] offset=%d: result encoding failed",
                        self.topic,
                        it.partition,
                        it.offset,
                    )
                    self.dead_letter_item(it, "internal_error", f"{type(exc).__name__}: {exc}")
                    continue
                values += v
                e2e += e
                kept.append(it)
            items = kept
        send = self.delivery.send
        for it, value in zip(items, values, strict=True):
            # A device id is str (possibly with lone surrogates from JSON): never let the
            # key's encoding fail.
            key = it.device_id.encode("utf-8", "backslashreplace")
            send(output, value, key, RESULT_HEADERS, it)
        metrics = self.metrics
        metrics.inference_duration.labels(model=m.name, version=m.version).observe(infer_s)
        metrics.batch_size.labels(model=m.name).observe(len(items))
        observe = metrics.e2e_latency.labels(model=m.name).observe
        for ms in e2e:
            if ms >= 0:
                observe(ms / 1000.0)
        metrics.results_produced.labels(topic=output, model=m.name, version=m.version).inc(
            len(items)
        )
        self.count += len(items)

    def _encode(
        self,
        items: list[Pending],
        y: np.ndarray,
        infer_s: float,
        started: float,
        model: Any,
        produced_at: int,
    ) -> tuple[list[bytes], list[int]]:
        m = model.manifest
        return encode_results(
            items,
            y,
            model=m.name,
            version=m.version,
            labels=m.labels,
            topic=self.topic,
            agent_id=self.config.agent_id,
            started=started,
            infer_s=infer_s,
            produced_at=produced_at,
        )

    def dead_letter_item(self, it: Pending, reason: Reason, message: str) -> None:
        """Dead-letter a batch item (a window goes as the ``.npy`` of its readings)."""
        value = window_as_npy(it.x) if it.window else it.value
        self.deadletters.send(value, it.key, it.headers, it.partition, it.offset, reason, message)

    def answer_refused(self, refused: list[Refused]) -> None:
        """Answer sends the broker refused for good another way (see DeadLetters)."""
        for token, error in refused:
            if self.monitoring is not None and self.monitoring.refused(token, error):
                continue
            if isinstance(token, Pending):
                self.metrics.undeliverable.labels(output="result", code=error.code or "other").inc()
                message = f"the result could not be produced ({error.code}): {error}"
                self.dead_letter_item(token, "undeliverable_result", message)
            elif isinstance(token, DeadLetterSent) and not token.stripped:
                self.deadletters.send_stripped(token, error)
            elif isinstance(token, DeadLetterSent):
                self.deadletters.dropped(token, error)
            else:  # pragma: no cover - every send names its input
                logger.error("a send without a token was refused for good: %s", error)
