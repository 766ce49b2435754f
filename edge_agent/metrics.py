"""The agent's Prometheus metrics (reference: docs/metrics.md).

Every metric lives in the :class:`~prometheus_client.CollectorRegistry` passed in, so
tests (and several agents in one process) each get their own. Names follow
``edge_agent_<name>_<unit>``; labels are bounded (topic, partition, model, version,
reason), never the device id.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from edge_agent.deadletters import REASONS
from edge_agent.monitoring import CONFIDENCE_BUCKETS, MonitorSnapshot
from edge_agent.sampling import SAMPLE_REASONS, SKIP_REASONS

#: Per-batch inference time: 50 us .. 10 s.
INFERENCE_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)
#: Device timestamp -> result produced: 1 ms .. 60 s.
E2E_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SWAP_RESULTS = ("ok", "refused", "rollback")
#: Who moved the agent below the highest version it verified (anti-rollback).
DOWNGRADE_BY = ("pin", "registry_pin", "rollback")
#: Why a move below it was refused.
DOWNGRADE_BLOCKED = ("registry_pin", "older_version")


class AgentMetrics:
    """The metrics of one agent, registered in ``registry``."""

    def __init__(self, *, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.messages_consumed = Counter(
            "edge_agent_messages_consumed_total",
            "Input messages taken from Kafka (before decoding).",
            ["topic"],
            registry=registry,
        )
        self.results_produced = Counter(
            "edge_agent_results_produced_total",
            "Results handed to the producer for the results topic.",
            ["topic", "model", "version"],
            registry=registry,
        )
        self.deadletters = Counter(
            "edge_agent_deadletters_total",
            "Inputs sent to the dead-letter topic, by reason (the error-type header).",
            ["reason"],
            registry=registry,
        )
        self.inference_duration = Histogram(
            "edge_agent_inference_duration_seconds",
            "Time of one batch's model invocation (preprocessing included).",
            ["model", "version"],
            buckets=INFERENCE_BUCKETS,
            registry=registry,
        )
        self.e2e_latency = Histogram(
            "edge_agent_e2e_latency_seconds",
            "Device timestamp (ts) to result produced, per result.",
            ["model"],
            buckets=E2E_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "edge_agent_batch_size",
            "Inputs per inference batch.",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "edge_agent_consumer_lag",
            "Messages behind the partition's highwater mark (highwater - position).",
            ["topic", "partition"],
            registry=registry,
        )
        self.model_info = Gauge(
            "edge_agent_model_info",
            "The model being served (value 1).",
            ["model", "version", "sha256", "variant"],
            registry=registry,
        )
        self.model_swaps = Counter(
            "edge_agent_model_swaps_total",
            "Model changes by result: ok (switched), refused (kept the old), rollback.",
            ["result"],
            registry=registry,
        )
        self.model_unsigned_allowed = Gauge(
            "edge_agent_model_unsigned_allowed",
            "1 when the agent runs unsigned bundles too (--allow-unsigned), else 0.",
            registry=registry,
        )
        self.model_downgrades = Counter(
            "edge_agent_model_downgrades_total",
            "Moves below the highest version this agent verified, by who made them: pin "
            "(--pin), registry_pin (pin file, --trust-registry-pin), rollback (in-process).",
            ["by"],
            registry=registry,
        )
        self.model_downgrades_blocked = Counter(
            "edge_agent_model_downgrades_blocked_total",
            "Moves below the highest version this agent verified that it refused: "
            "registry_pin (an untrusted pin file) or older_version (only older ones offered).",
            ["reason"],
            registry=registry,
        )
        self.windows_open = Gauge(
            "edge_agent_windows_open",
            "Devices with a sliding window in memory (sequence models).",
            registry=registry,
        )
        self.windows_evicted = Counter(
            "edge_agent_windows_evicted_total",
            "Device windows dropped to bound memory: capacity (max-devices) or idle.",
            ["reason"],
            registry=registry,
        )
        self.runtime_fallback = Counter(
            "edge_agent_runtime_fallback_total",
            "Models run without the default delegates after a failed first invoke.",
            ["reason"],
            registry=registry,
        )
        self.delivery_errors = Counter(
            "edge_agent_delivery_errors_total",
            "Kafka failures that made the agent back off and replay from the last commit.",
            ["stage"],
            registry=registry,
        )
        self.undeliverable = Counter(
            "edge_agent_undeliverable_total",
            "Outputs the broker refused for good (too large, topic missing or not "
            "authorized), by output: result (dead-lettered instead), deadletter (sent again "
            "without the value) or dropped (not even that: the input was skipped).",
            ["output", "code"],
            registry=registry,
        )
        self.bad_outputs = Counter(
            "edge_agent_bad_model_outputs_total",
            "Inputs whose model output was not finite or not shaped (1, classes).",
            ["model", "version"],
            registry=registry,
        )
        self.model_rollbacks = Counter(
            "edge_agent_model_rollbacks_total",
            "Automatic rollbacks of the serving model, by reason.",
            ["reason"],
            registry=registry,
        )
        self.partitions_assigned = Gauge(
            "edge_agent_partitions_assigned",
            "Input partitions this agent owns in its consumer group.",
            registry=registry,
        )
        self.input_partitions = Gauge(
            "edge_agent_input_partitions",
            "Partitions of the input topic (from metadata).",
            registry=registry,
        )
        self.unassigned_seconds = Gauge(
            "edge_agent_unassigned_seconds",
            "Seconds since this agent last owned an input partition (0 while it owns some).",
            registry=registry,
        )
        self.info = Gauge(
            "edge_agent_info",
            "Always 1; labels name this agent (bounded: one series per process).",
            ["agent_id", "group"],
            registry=registry,
        )
        self.kafka_client = Gauge(
            "edge_agent_kafka_client_info",
            "Always 1; the Kafka client library this agent runs on (client: confluent or "
            "kafka-python), the --client asked for (requested: auto, confluent, kafka-python) "
            "and the library's version.",
            ["client", "requested", "version"],
            registry=registry,
        )
        self.ready = Gauge(
            "edge_agent_ready",
            "1 when connected to the broker with a model loaded (as /readyz), else 0.",
            registry=registry,
        )
        self.samples = Counter(
            "edge_agent_samples_total",
            "Inputs sent to the samples topic, by why: low_confidence, drift, random.",
            ["reason"],
            registry=registry,
        )
        self.samples_skipped = Counter(
            "edge_agent_samples_skipped_total",
            "Inputs that qualified as samples but were not sent: rate_limited, device_cap, "
            "too_large, refused (by the broker), paused (samples topic unusable).",
            ["reason"],
            registry=registry,
        )
        self._shadow_metrics(registry)
        #: Published by edge_agent.monitoring.Monitoring.publish; read at each scrape.
        self.monitor_snapshots: tuple[MonitorSnapshot, ...] = ()
        registry.register(MonitoringCollector(self))
        for reason in SAMPLE_REASONS:
            self.samples.labels(reason=reason)
        for reason in SKIP_REASONS:
            self.samples_skipped.labels(reason=reason)
        for reason in REASONS:
            self.deadletters.labels(reason=reason)
        self.model_rollbacks.labels(reason="bad_model_output")
        for result in SWAP_RESULTS:
            self.model_swaps.labels(result=result)
        for by in DOWNGRADE_BY:
            self.model_downgrades.labels(by=by)
        for reason in DOWNGRADE_BLOCKED:
            self.model_downgrades_blocked.labels(reason=reason)
        self.runtime_fallback.labels(reason="xnnpack_invoke_failed")
        for reason in ("capacity", "idle"):
            self.windows_evicted.labels(reason=reason)
        for stage in ("produce", "commit"):
            self.delivery_errors.labels(stage=stage)
        self.ready.set(0)

    def _shadow_metrics(self, registry: CollectorRegistry) -> None:
        """Shadow and promote (edge_agent/shadow.py, edge_agent/promotion.py): labels model
        and version (the candidate's)."""
        labels = ["model", "version"]
        self.shadow_candidate = Gauge(
            "edge_agent_shadow_candidate_info",
            "The candidate version running in shadow (value 1; absent when none).",
            labels,
            registry=registry,
        )
        self.shadow_inputs = Counter(
            "edge_agent_shadow_inputs_total",
            "Inputs the candidate answered in shadow.",
            labels,
            registry=registry,
        )
        self.shadow_dropped = Counter(
            "edge_agent_shadow_dropped_total",
            "Inputs not shadowed because the shadow queue was full (--shadow-queue).",
            labels,
            registry=registry,
        )
        self.shadow_errors = Counter(
            "edge_agent_shadow_errors_total",
            "Candidate outputs in shadow that were unusable (exception, NaN, wrong shape).",
            labels,
            registry=registry,
        )
        self.shadow_duration = Histogram(
            "edge_agent_shadow_inference_duration_seconds",
            "Time of one shadow batch on the candidate (preprocessing included).",
            labels,
            buckets=INFERENCE_BUCKETS,
            registry=registry,
        )
        self.shadow_agreement = Gauge(
            "edge_agent_shadow_agreement_ratio",
            "Share of shadowed inputs where the candidate's top label equals the serving one's.",
            labels,
            registry=registry,
        )
        self.shadow_confidence = Gauge(
            "edge_agent_shadow_mean_confidence",
            "Mean top-class score of the candidate on the shadowed inputs.",
            labels,
            registry=registry,
        )
        self.shadow_accuracy = Gauge(
            "edge_agent_shadow_accuracy_ratio",
            "Accuracy on the shadowed inputs that carry a true label, of the candidate or "
            "of the serving model on the same inputs (role).",
            [*labels, "role"],
            registry=registry,
        )
        self.promotions = Counter(
            "edge_agent_promotions_total",
            "Decisions on shadowed candidates: result promoted or rejected, by reason.",
            ["model", "result", "reason"],
            registry=registry,
        )

    def set_model(self, manifest: Any) -> None:
        """Show ``manifest`` (a :class:`stream.bundle.Manifest`) as the one model served."""
        self.model_info.clear()
        self.model_info.labels(
            model=manifest.name,
            version=manifest.version,
            sha256=manifest.model_sha256,
            variant=manifest.variant,
        ).set(1)

    def forget_partitions(self, topic: str, partitions: list[int]) -> None:
        """Drop the lag series of partitions this agent no longer owns."""
        for p in partitions:
            try:
                self.consumer_lag.remove(topic, str(p))
            except KeyError:
                pass


class MonitoringCollector(Collector):
    """The monitoring metrics of the versions monitored (edge_agent/monitoring.py), built
    at scrape time from the snapshots the pipeline last published: labels model, version."""

    def __init__(self, metrics: AgentMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        snaps = self._metrics.monitor_snapshots
        labels = ["model", "version"]
        confidence = HistogramMetricFamily(
            "edge_agent_result_confidence",
            "Top-class score of each result, per model version.",
            labels=labels,
        )
        low = GaugeMetricFamily(
            "edge_agent_low_confidence_ratio",
            "Share of the monitor window's results below --low-confidence.",
            labels=labels,
        )
        drift = GaugeMetricFamily(
            "edge_agent_input_drift_score",
            "PSI of the monitor window's inputs against the training data (largest channel).",
            labels=labels,
        )
        score_drift = GaugeMetricFamily(
            "edge_agent_confidence_drift_score",
            "PSI of the monitor window's top-class scores against the test split's.",
            labels=labels,
        )
        inputs = GaugeMetricFamily(
            "edge_agent_monitor_window_inputs",
            "Inputs in the monitor window (at most --monitor-window).",
            labels=labels,
        )
        for s in snaps:
            values = [s.model, s.version]
            buckets = [
                (repr(le), float(n)) for le, n in zip(CONFIDENCE_BUCKETS, s.buckets, strict=False)
            ]
            buckets.append(("+Inf", float(s.count)))
            confidence.add_metric(values, buckets, s.total)
            inputs.add_metric(values, float(s.inputs))
            if s.low_confidence_ratio is not None:
                low.add_metric(values, s.low_confidence_ratio)
            if s.drift is not None:
                drift.add_metric(values, s.drift)
            if s.confidence_drift is not None:
                score_drift.add_metric(values, s.confidence_drift)
        yield from (confidence, low, drift, score_drift, inputs)
