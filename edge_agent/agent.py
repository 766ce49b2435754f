"""The agent process: model store, HTTP endpoints, pipeline, signals.

``edgeinfer agent`` runs :func:`run_agent_command`; tests and embedders use
:class:`Agent` directly (``Agent(config).run()`` in a thread, ``.stop()`` to drain).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry

from edge_agent.config import AgentConfig, config_from_args
from edge_agent.health import HealthServer
from edge_agent.metrics import AgentMetrics
from edge_agent.pipeline import Pipeline
from stream.bundle import load_public_key

logger = logging.getLogger(__name__)


def build_store(config: AgentConfig, metrics: AgentMetrics) -> Any:
    """The :class:`edge_agent.model_store.ModelStore` for the configured model source."""
    from edge_agent.model_store import ModelStore
    from edge_agent.sources import BundleDirSource, ModelsTopicSource, RegistrySource

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
    public_key = load_public_key(config.public_key) if config.public_key else None
    return ModelStore(
        source=source,
        model_name=config.model,
        public_key=public_key,
        num_threads=config.threads,
        pinned_version=config.pin,
        metrics=metrics,
        state_dir=config.state_dir,
    )


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
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = AgentMetrics(registry=self.registry)
        self.metrics.info.labels(agent_id=config.agent_id, group=config.group or "").set(1)
        self.stop_event = threading.Event()
        self.pipeline: Pipeline | None = None
        self.metrics_port: int | None = None
        #: Set once the HTTP server is listening (metrics_port is known).
        self.listening = threading.Event()
        self._store = store
        self._http = HealthServer(
            registry=self.registry,
            ready=self.is_ready,
            host=config.metrics_host,
            port=config.metrics_port,
        )

    def is_ready(self) -> bool:
        pipeline = self.pipeline
        return pipeline is not None and pipeline.ready

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
            if store is None:
                store = build_store(self.config, self.metrics)
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


def run_agent_command(args: argparse.Namespace) -> int:
    """``edgeinfer agent ...``."""
    config = config_from_args(args)
    agent = Agent(config)
    install_signal_handlers(agent)
    port = agent.start_http()
    if config.metrics_port == 0:
        print(f"metrics port: {port}", flush=True)  # the free port chosen for us
    return agent.run()
