"""The agent process: model store, HTTP endpoints, pipeline, signals.

``edgeinfer agent`` runs :func:`run_agent`; tests and embedders use
:class:`Agent` directly (``Agent(config).run()`` in a thread, ``.stop()`` to drain).

Cold start (process start to ``/readyz`` 200) is kept short: this module imports only
the standard library, the settings and :mod:`edge_agent.probe` at first; the constructor
starts the child test load of the first model (:func:`start_test_load`: a fork made right
after numpy and LiteRT are imported, while the process is single-threaded) *before* it
imports the rest (prometheus_client, the pipeline, Pillow), so the test load runs while
this process imports, serves HTTP and verifies the bundle. The model store then takes the
running child's result for the same bytes (docs/agent.md, "Start-up").
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from edge_agent.config import AgentConfig, config_from_args
from edge_agent.probe import CACHE_DIR, ProbeCache, Prober
from stream.bundle import MANIFEST_FILE, MAX_MANIFEST_BYTES, MODEL_FILE, read_bounded
from stream.exceptions import EdgeInferError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from edge_agent.metrics import AgentMetrics
    from edge_agent.pipeline import Pipeline

logger = logging.getLogger(__name__)


def start_test_load(config: AgentConfig, prober: Prober) -> None:
    """Start the child test load of the model the store will most likely load first (the
    ``--bundle``; in a registry the pinned, else the newest version), for the store to
    take up.

    Nothing is trusted here: the store still verifies the bundle, and uses this child's
    result only for the very bytes it verified (same sha256, threads and delegates). The
    ``models`` topic, and a bundle that cannot be read, wait for the store (which reports
    why).
    """
    folder = _first_bundle(config)
    if folder is None:
        return
    try:  # bounded: a FIFO or /dev/zero in the bundle folder is left to the store to refuse
        model = read_bounded(folder / MODEL_FILE, max_bytes=config.max_model_bytes, what="model")
        manifest = json.loads(
            read_bounded(folder / MANIFEST_FILE, max_bytes=MAX_MANIFEST_BYTES, what="manifest")
        )
    except (OSError, ValueError, EdgeInferError):
        return
    if not model or not isinstance(manifest, dict):
        return
    prober.start(
        model,
        what=str(folder / MODEL_FILE),
        num_threads=config.threads,
        use_default_delegates=bool(manifest.get("use_default_delegates", True)),
    )


def _first_bundle(config: AgentConfig) -> Path | None:
    if config.bundle is not None:
        return Path(config.bundle)
    if config.registry is None or config.model is None:
        return None
    from stream.registry import Registry

    registry = Registry(config.registry)
    try:  # as the store's choice at start: --pin, the registry's pin, the newest version
        versions = registry.versions(config.model)
        version = config.pin or registry.pinned(config.model) or (versions[-1] if versions else "")
        return registry.bundle_path(config.model, version) if version in versions else None
    except (OSError, EdgeInferError):
        return None


def _with_client(config: AgentConfig, metrics: AgentMetrics) -> AgentConfig:
    """``config`` with ``--client auto`` resolved (confluent when it imports, else
    kafka-python), logged and exported as ``edge_agent_kafka_client_info``."""
    from edge_agent.transport import client_version, resolve_client

    client = resolve_client(config.client)
    version = client_version(client)
    metrics.kafka_client.labels(client=client, requested=config.client, version=version).set(1)
    logger.info(
        'kafka client client="%s" requested="%s" version="%s"', client, config.client, version
    )
    return config if client == config.client else replace(config, client=client)


def build_store(config: AgentConfig, metrics: AgentMetrics, prober: Prober | None = None) -> Any:
    """The :class:`edge_agent.model_store.ModelStore` for the configured model source."""
    from edge_agent.model_store import ModelStore
    from edge_agent.sources import BundleDirSource, ModelsTopicSource, RegistrySource
    from stream.bundle import load_public_keys

    source: Any
    if config.bundle is not None:
        source = BundleDirSource(config.bundle)
    elif config.registry is not None:
        assert config.model is not None  # noqa: S101 (validated)
        source = RegistrySource(config.registry, config.model)
    else:
        assert config.models_topic is not None and config.model is not None  # noqa: S101
        source = ModelsTopicSource(
            config.kafka, config.models_topic, config.model, config.state_dir / "models-cache"
        )
    try:
        keys = load_public_keys(config.public_key) if config.public_key else None
        return ModelStore(
            source=source,
            model_name=config.model,
            public_key=keys,
            allow_unsigned=config.allow_unsigned,
            max_model_bytes=config.max_model_bytes,
            min_version=config.min_version,
            trust_registry_pin=config.trust_registry_pin,
            num_threads=config.threads,
            pinned_version=config.pin,
            metrics=metrics,
            state_dir=config.state_dir,
            prober=prober,
            promotion=config.promotion,
            agent_id=config.agent_id,
        )
    except BaseException:
        source.close()  # the models-topic reader thread already runs
        raise


class Agent:
    """One agent: serves ``/metrics``, ``/healthz``, ``/readyz`` and runs the pipeline."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        registry: CollectorRegistry | None = None,
        store: Any | None = None,
    ) -> None:
        self.config = config
        #: Test loads of this agent's models; a passed model is remembered in the state dir.
        self.prober = Prober(cache=ProbeCache(config.state_dir / CACHE_DIR))
        if store is None:
            start_test_load(config, self.prober)  # first: it runs while we import
        from prometheus_client import CollectorRegistry

        from edge_agent.health import HealthServer
        from edge_agent.metrics import AgentMetrics

        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = AgentMetrics(registry=self.registry)
        self.metrics.info.labels(agent_id=config.agent_id, group=config.group or "").set(1)
        self.config = config = _with_client(config, self.metrics)
        self.stop_event = threading.Event()
        self.pipeline: Pipeline | None = None
        self.metrics_port: int | None = None
        #: Set once the HTTP server is listening (metrics_port is known).
        self.listening = threading.Event()
        self._store = store
        self._http = HealthServer(
            registry=self.registry,
            ready=self.is_ready,
            alive=self.liveness,
            host=config.metrics_host,
            port=config.metrics_port,
        )

    def is_ready(self) -> bool:
        pipeline = self.pipeline
        return pipeline is not None and pipeline.ready

    def liveness(self) -> str | None:
        """None while the agent is alive, else why not (``/healthz`` answers 503 with it).

        Stuck means the pipeline loop has not started a step for
        :meth:`AgentConfig.stall_limit_s`. Before the pipeline runs (the first model is
        loading, bounded by --model-wait-s) and while it connects to the broker (it retries
        with a backoff and stops on SIGTERM) the agent counts as alive.
        """
        pipeline = self.pipeline
        if pipeline is None or getattr(pipeline, "consumer", None) is None:
            return None
        age = time.monotonic() - pipeline.last_step_at
        limit = self.config.stall_limit_s()
        if age <= limit:
            return None
        return (
            f"pipeline loop stuck: no step for {age:.1f} s (limit {limit:g} s: "
            "--stall-timeout-s, default max-poll-interval + 30 s)"
        )

    def stop(self) -> None:
        """Ask the agent to drain and return from :meth:`run` (thread- and signal-safe)."""
        self.stop_event.set()

    def start_http(self) -> int:
        """Start ``/metrics``, ``/healthz``, ``/readyz`` (done by :meth:`run` if not yet)."""
        if self.metrics_port is None:
            self.metrics_port = self._http.start()
            self.listening.set()
        return self.metrics_port

    def run(self) -> int:
        """Serve until :meth:`stop`; returns the process exit code (0 after a clean drain)."""
        logger.info("agent starting %s", _describe(self.config))
        self.start_http()
        store = self._store
        try:
            from edge_agent.pipeline import Pipeline

            if store is None:
                store = build_store(self.config, self.metrics, self.prober)
            started = time.monotonic()
            model = self._load_initial(store)
            if model is None:  # stopped while waiting for the first model
                return 0
            self.pipeline = Pipeline(
                config=self.config, store=store, metrics=self.metrics, stop=self.stop_event
            )
            m = model.manifest
            logger.info(
                'model loaded name="%s" version="%s" variant="%s" task="%s" runtime="%s" '
                'after_s=%.2f input="%s" output="%s" group="%s" metrics_port=%d',
                m.name,
                m.version,
                m.variant,
                m.task,
                getattr(model.runtime, "name", "?"),
                time.monotonic() - started,
                self.pipeline.topic,
                self.config.output_topic,
                self.pipeline.group_id,
                self.metrics_port,
            )
            self.pipeline.run()
            return 0
        finally:
            if store is not None and self._store is None:
                try:
                    store.close()
                except Exception:  # noqa: BLE001
                    logger.exception("closing the model store failed")
            self.prober.close()
            self._http.stop()
            logger.info("agent stopped")

    def _load_initial(self, store: Any) -> Any | None:
        """``store.load_initial`` in a helper thread, so a signal does not wait for it."""
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def target() -> None:
            try:
                outcome["model"] = store.load_initial(timeout_s=self.config.model_wait_s)
            except BaseException as exc:  # noqa: BLE001  re-raised in the caller's thread
                outcome["error"] = exc
            finally:
                done.set()

        threading.Thread(target=target, name="initial-model", daemon=True).start()
        while not done.wait(0.2):
            if self.stop_event.is_set():
                logger.info("stopped while waiting for the first model")
                return None
        if "error" in outcome:
            raise outcome["error"]
        return outcome["model"]


def _describe(config: AgentConfig) -> str:
    return " ".join(f"{k}={v}" for k, v in config.describe().items())


def install_signal_handlers(agent: Agent) -> None:
    """SIGTERM/SIGINT drain the agent; a second one exits at once (code 1)."""
    received: list[int] = []

    def handle(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) == 1:
            name = signal.Signals(signum).name
            logger.info("signal %s: draining (send it again to exit at once)", name)
            agent.stop()
        else:
            logger.warning("second signal: exiting without draining")
            os._exit(1)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def run_agent(args: argparse.Namespace) -> int:
    """``edgeinfer agent ...``."""
    config = config_from_args(args)
    agent = Agent(config)
    install_signal_handlers(agent)
    port = agent.start_http()
    if config.metrics_port == 0:
        print(f"metrics port: {port}", flush=True)  # the free port chosen for us
    return agent.run()
