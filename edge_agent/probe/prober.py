"""The coordinator of a model store's test loads (:class:`Prober`: a child started ahead
of time, the cache), and one-shot test loads (:func:`probe_model`, :func:`probe_bundle`)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from edge_agent.probe.cache import ProbeCache
from edge_agent.probe.outcome import ProbeKey, ProbeResult
from edge_agent.probe.process import DEFAULT_TIMEOUT_S, ProbeProcess

logger = logging.getLogger(__name__)


class Prober:
    """The test loads of one model store.

    :meth:`start` begins a test load ahead of time (the agent does this for ``--bundle``
    before its imports); :meth:`probe` takes the result of one started for the same bytes
    and options, else runs one. With a :class:`ProbeCache`, a model that passed before on
    this installation needs no child at all, and new passes are remembered.
    """

    def __init__(
        self, *, cache: ProbeCache | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.cache = cache
        self.timeout_s = timeout_s
        self._started: dict[ProbeKey, ProbeProcess] = {}
        self._lock = threading.Lock()
        #: Test loads run in a child (cache misses), for tests and logs.
        self.children = 0

    def start(
        self, model: bytes, *, what: str, num_threads: int = 1, use_default_delegates: bool = True
    ) -> ProbeKey:
        """Start the test load of ``model`` now (nothing when it is cached or running); in
        a forked child when this process is still single-threaded (:func:`can_fork`)."""
        key = ProbeKey.of(model, num_threads, use_default_delegates)
        if self.cache is not None and self.cache.get(key) is not None:
            return key
        with self._lock:
            if key not in self._started:
                self._started[key] = ProbeProcess(
                    model,
                    what=what,
                    num_threads=num_threads,
                    use_default_delegates=use_default_delegates,
                    timeout_s=self.timeout_s,
                    fork=True,
                )
                self.children += 1
        return key

    def probe(
        self,
        model: bytes,
        *,
        what: str,
        num_threads: int = 1,
        use_default_delegates: bool = True,
        timeout_s: float | None = None,
    ) -> ProbeResult:
        """The test load of exactly these bytes with these options (never raises for a bad
        model): a cached pass, the result of a child started by :meth:`start`, or a new one."""
        key = ProbeKey.of(model, num_threads, use_default_delegates)
        if self.cache is not None:
            report = self.cache.get(key)
            if report is not None:
                logger.info(
                    "test load skipped: this model passed it before on this installation "
                    'what="%s" sha256=%s',
                    what,
                    key.sha256[:12],
                )
                return ProbeResult(ok=True, details=report, cached=True)
        with self._lock:
            running = self._started.pop(key, None)
            if running is None:
                self.children += 1
        if running is None:
            running = ProbeProcess(
                model,
                what=what,
                num_threads=num_threads,
                use_default_delegates=use_default_delegates,
                timeout_s=self.timeout_s if timeout_s is None else timeout_s,
            )
        result = running.result(what)
        if result.ok and self.cache is not None:
            self.cache.put(key, result.details)
        return result

    def close(self) -> None:
        """Kill test loads started ahead of time that nobody asked for."""
        with self._lock:
            started, self._started = list(self._started.values()), {}
        for running in started:
            running.cancel()


def probe_model(
    model: bytes,
    *,
    what: str,
    num_threads: int = 1,
    use_default_delegates: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ProbeResult:
    """Load and invoke ``model`` in a child Python process; never raises for a bad model."""
    return ProbeProcess(
        model,
        what=what,
        num_threads=num_threads,
        use_default_delegates=use_default_delegates,
        timeout_s=timeout_s,
    ).result()


def probe_bundle(
    bundle_dir: Path,
    *,
    num_threads: int = 1,
    use_default_delegates: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ProbeResult:
    """:func:`probe_model` on ``bundle_dir/model.tflite`` (the bundle is not verified here)."""
    from stream.bundle import MODEL_FILE

    path = Path(bundle_dir) / MODEL_FILE
    try:
        model = path.read_bytes()
    except OSError as exc:
        return ProbeResult(ok=False, error=f"cannot read {path}: {exc}")
    return probe_model(
        model,
        what=str(path),
        num_threads=num_threads,
        use_default_delegates=use_default_delegates,
        timeout_s=timeout_s,
    )
