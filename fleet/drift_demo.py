"""``edgeinfer demo --scenario drift``: the closed loop, watched in a real Prometheus.

The digits camera fleet streams through two agents. After ``undrifted_s`` seconds some
cameras' frames drift (default: exposure drops to 40%, on a share of the cameras). Then,
with real parts only:

1. the agents' input drift score rises and the drift alert of
   ``deploy/prometheus/alerts.yml`` fires in a Prometheus server run by the demo;
2. the agents capture samples (low confidence and drifted inputs first) to ``samples``,
   and the replayer's true labels arrive on ``feedback`` (a labeller's stand-in);
   ``edgeinfer monitor`` joins results with feedback into online accuracy;
3. a candidate is retrained from the captured samples with their feedback labels, mixed
   with the original training data, signed and published;
4. each agent shadows the candidate on live inputs, promotes it by its gates, and accuracy
   recovers.

It writes ``<workdir>/summary.json`` (accuracy before/during/after, detection delay, false
alarms on the undrifted part, samples captured, the promoted version) and
``<workdir>/drift.png`` (accuracy and drift score over time).

Why one module of this size: like fleet/demo.py, it is one script-like sequence whose
steps share the run's processes and read best in order; its arithmetic is in
fleet/drift_timeline.py (unit-tested) and its Prometheus in fleet/prometheus.py.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.demo import Demo, DemoConfig, ModelPlan, run_with_signals
from fleet.drift_timeline import Answer, Timeline, accuracy, accuracy_bins, episodes
from fleet.prometheus import ALERT_RULES, PrometheusServer, ScrapeJob, rules_with_for
from fleet.top import scrape
from stream import topics
from stream.broker import die_with_parent, free_port
from stream.datasets import load_dataset
from stream.drift import Drift
from stream.exceptions import EdgeInferError
from stream.kafka import make_consumer, make_producer, topic_partitions
from stream.replay import replay_images
from stream.results import ResultsCollector
from stream.schemas import InferenceResult
from stream.settings import KafkaSettings

#: The alerts the scenario watches (deploy/prometheus/alerts.yml) and the `for:` they get
#: here: the shipped rules wait minutes, which a demo of minutes cannot.
DRIFT_ALERT = "EdgeInputDrift"
ACCURACY_ALERT = "EdgeOnlineAccuracyLow"
DEMO_FOR = {DRIFT_ALERT: "10s", ACCURACY_ALERT: "10s"}
AGENT_JOB = "edgeinfer-agent"
MONITOR_JOB = "edgeinfer-monitor"

PLAN = ModelPlan(
    name="digits-cnn",
    dataset="digits",
    arch="cnn",
    topic=topics.IMAGES,
    variant_preference=("int8", "float32"),
    train_args=("--variants", "float32,int8", "--quiet"),
)


@dataclass(kw_only=True)
class DriftConfig:
    workdir: Path = Path("runs/demo-drift")
    agents: int = 2
    partitions: int = 4
    cameras: int = 8
    rate: float = 40.0  # images per second over the fleet
    undrifted_s: float = 90.0
    drift: str = "darken:0.4"
    drift_devices: float = 0.75
    monitor_window: int = 500
    samples_per_s: float = 4.0  # per agent
    retrain_samples: int = 300  # captured samples (with labels) before retraining
    after_promotion_s: float = 30.0
    retrain: bool = False  # train v1 even if a run exists
    timeout_s: float = 1200.0
    out: Any = None


@dataclass
class _Moments:
    drift_start: float | None = None
    detected: float | None = None
    published: float | None = None
    promoted: float | None = None
    notes: list[str] = field(default_factory=list)


class DriftDemo(Demo):
    def __init__(self, config: DriftConfig) -> None:
        base = DemoConfig(
            workdir=config.workdir, partitions=config.partitions, retrain=config.retrain
        )
        if config.out is not None:
            base.out = config.out
        super().__init__(base)
        self.dcfg = config
        self.drift = Drift.parse(config.drift, devices=config.drift_devices)
        self.timeline = Timeline()
        self.moments = _Moments()
        self.prom: PrometheusServer | None = None
        self.monitor_port = free_port()
        self._train_thread: threading.Thread | None = None
        self._candidate: Path | None = None
        self._train_error: str | None = None

    # ------------------------------------------------------------------ parts

    def _agent_options(self) -> list[str]:
        c = self.dcfg
        return [
            "--promotion",
            "shadow",
            "--monitor-window",
            str(c.monitor_window),
            "--samples-per-s",
            str(c.samples_per_s),
            "--samples-burst",
            "20",
            "--samples-device-per-min",
            "600",
        ]

    def _start_monitor(self, settings: KafkaSettings) -> str:
        cmd = [
            *self._edgeinfer(),
            "monitor",
            "--metrics-port",
            str(self.monitor_port),
            "--bootstrap-servers",
            settings.bootstrap_servers,
        ]
        log = (self.work / "logs" / "monitor.log").open("wb")
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self.procs.append(proc)
        return f"127.0.0.1:{self.monitor_port}"

    def _start_prometheus(self, agents: list[str], monitor: str) -> PrometheusServer:
        prom = PrometheusServer(
            self.work / "prometheus",
            jobs=[ScrapeJob(AGENT_JOB, tuple(agents)), ScrapeJob(MONITOR_JOB, (monitor,))],
            rules_text=rules_with_for(ALERT_RULES, DEMO_FOR),
        )
        prom.start()
        self.say(f"Prometheus on {prom.url} (alert rules of {ALERT_RULES.name}, for: {DEMO_FOR})")
        return prom

    def _on_result(self, r: InferenceResult) -> None:
        sent = r.ts if r.ts is not None else r.produced_at
        correct = None if r.true_label is None else r.true_label == r.label
        self.timeline.add(Answer(int(sent), int(r.produced_at), r.version, correct))

    def _samples_captured(self, consumer: Any) -> int:
        from kafka import TopicPartition

        parts = [
            TopicPartition(topics.SAMPLES, p) for p in topic_partitions(consumer, topics.SAMPLES)
        ]
        return int(sum(consumer.end_offsets(parts).values()))

    def _replay_phase(
        self, settings: KafkaSettings, *, drift: Drift | None, stop: threading.Event
    ) -> threading.Thread:
        producer = make_producer(settings)
        self._producers.append(producer)
        digits = load_dataset(PLAN.dataset)
        name = "drifted" if drift else "undrifted"

        def run() -> None:
            try:
                self.replays[name] = replay_images(
                    settings,
                    digits,
                    producer=producer,
                    topic=PLAN.topic,
                    rate=self.dcfg.rate,
                    repeat=0,
                    devices=self.dcfg.cameras,
                    partitions=None,
                    drift=drift,
                    stop=stop,
                    feedback=topics.FEEDBACK,
                )
            except BaseException as exc:  # reported by the main loop
                self._replay_errors.append(exc)

        t = threading.Thread(target=run, name=f"replay-{name}", daemon=True)
        t.start()
        return t

    def _retrain(self, settings: KafkaSettings, like: Path) -> None:
        """Train the candidate from the captured samples on a thread (the stream goes on)."""
        out = self.work / "train" / f"{PLAN.name}-v2"
        cmd = [
            *self._edgeinfer(),
            "train",
            "--dataset",
            f"kafka:{topics.SAMPLES}",
            "--labels-from",
            topics.FEEDBACK,
            "--mix",
            PLAN.dataset,
            "--like",
            str(like),
            "--arch",
            PLAN.arch,
            "--name",
            PLAN.name,
            "--version",
            "2",
            "--seed",
            "2",
            "--out",
            str(out),
            "--key",
            str(self.work / "keys" / "edgeinfer.key"),
            *PLAN.train_args,
            "--bootstrap-servers",
            settings.bootstrap_servers,
        ]
        log = self.work / "logs" / f"train-{PLAN.name}-v2.log"

        def run() -> None:
            with log.open("wb") as fh:
                rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT)
            if rc != 0:
                tail = log.read_text(errors="replace")[-1500:]
                self._train_error = f"retraining failed (exit {rc}); log {log}:\n{tail}"
                return
            report = json.loads((out / "report.json").read_text())
            for variant in PLAN.variant_preference:
                if report.get("variants", {}).get(variant, {}).get("publishable"):
                    self._candidate = out / "bundles" / variant
                    return
            self._train_error = f"no publishable variant in {out / 'report.json'}"

        self._train_thread = threading.Thread(target=run, name="retrain", daemon=True)
        self._train_thread.start()

    def _serving(self, agents: list[str]) -> set[str]:
        """The versions the agents serve now (from their /metrics; "-" when one is down)."""
        return {scrape(url).version for url in agents}

    # ------------------------------------------------------------------ main

    def run(self) -> dict[str, Any]:
        c, m = self.dcfg, self.moments
        t_start = time.monotonic()
        self.prepare(f"train/{PLAN.name}-v2")  # the candidate is retrained every run
        v1 = self.train(PLAN, version="1", seed=1)
        settings = self.start_broker(
            [PLAN.topic, topics.RESULTS, topics.DEADLETTER, topics.SAMPLES, topics.FEEDBACK]
        )
        self.publish(v1, settings)

        self.agent_args = self._agent_options()
        agents = [self.start_agent(PLAN, i, settings) for i in range(c.agents)]
        self.agent_urls[PLAN.name] = agents
        monitor = self._start_monitor(settings)
        self.wait_ready([*agents, monitor])  # the monitor answers /readyz once it owns partitions
        self.wait_assigned()
        self.prom = prom = self._start_prometheus(agents, monitor)

        collector = ResultsCollector(settings=settings, on_result=self._on_result)
        samples = make_consumer(settings, group_id=None)
        stop_a, stop_b = threading.Event(), threading.Event()
        self.say(
            f"streaming {c.cameras} cameras at {c.rate:g} images/s, "
            f"undrifted for {c.undrifted_s:g} s"
        )
        t0 = time.time()
        replay_a = self._replay_phase(settings, drift=None, stop=stop_a)
        deadline = time.monotonic() + c.timeout_s
        next_status = 0.0
        while time.time() - t0 < c.undrifted_s:
            self._step(collector)
            if time.monotonic() >= next_status:
                self._status("undrifted", samples)
                next_status = time.monotonic() + 10
        stop_a.set()
        replay_a.join(timeout=30)
        m.drift_start = time.time()
        self.timeline.drift_start_ms = int(m.drift_start * 1000)
        self.say(f"drift starts: {self.drift.describe()}")
        replay_b = self._replay_phase(settings, drift=self.drift, stop=stop_b)
        phase = "drifted"
        while time.monotonic() < deadline:
            self._step(collector)
            now = time.time()
            if m.detected is None and prom.firing(DRIFT_ALERT):
                m.detected = now
                self.timeline.detected_ms = int(now * 1000)
                n = self.timeline.answered_between(self.timeline.drift_start_ms, int(now * 1000))
                self.say(
                    f"{DRIFT_ALERT} firing {now - m.drift_start:.0f} s after the drift ({n} inputs)"
                )
            if m.detected is not None and self._train_thread is None:
                captured = self._samples_captured(samples)
                if captured >= c.retrain_samples:
                    self.say(f"{captured} samples captured: retraining a candidate from them")
                    self._retrain(settings, v1)
                    phase = "retraining"
            if self._train_error:
                raise EdgeInferError(self._train_error)
            if self._candidate is not None and m.published is None:
                self.publish(self._candidate, settings)
                m.published = time.time()
                phase = "shadowing"
            if m.published is not None and m.promoted is None and self._serving(agents) == {"2"}:
                m.promoted = time.time()
                self.timeline.promoted_ms = int(m.promoted * 1000)
                self.say(
                    f"every agent promoted v2, {m.promoted - m.published:.0f} s after publishing"
                )
                phase = "promoted"
            if m.promoted is not None and time.time() - m.promoted >= c.after_promotion_s:
                break
            if time.monotonic() >= next_status:
                self._status(phase, samples)
                next_status = time.monotonic() + 10
        else:
            m.notes.append(f"stopped by the {c.timeout_s:.0f} s limit in phase {phase}")
        stop_b.set()
        replay_b.join(timeout=30)
        deadline_drain = time.monotonic() + 10
        while time.monotonic() < deadline_drain:
            if collector.poll(timeout_ms=500) == 0:
                break
        summary = self._drift_summary(t0, samples, t_start)
        collector.close()
        samples.close()
        return summary

    def _step(self, collector: ResultsCollector) -> None:
        """Read results for up to a second; stop on Ctrl-C or a failed replay."""
        collector.poll(timeout_ms=1000)
        self.check_stop()
        if self._replay_errors:
            raise self._replay_errors[0]

    def _status(self, phase: str, samples: Any) -> None:
        acc = accuracy(self.timeline.answers[-400:])
        drift = self._by_version("max by (version) (edge_agent_input_drift_score)")
        online = self._by_version("min by (version) (edgeinfer_online_accuracy)")
        self.say(
            f"[{phase}] results {len(self.timeline.answers)}  accuracy (last 400) "
            f"{_fmt(acc)}  drift score {drift}  online accuracy {online}  "
            f"samples {self._samples_captured(samples)}  "
            f"serving {sorted(self._serving(self.agent_urls[PLAN.name]))}"
        )

    def _by_version(self, promql: str) -> str:
        """``v1 0.123 v2 0.456`` from a query answering one series per version."""
        if self.prom is None:
            return "-"
        rows = sorted(
            (r["metric"].get("version", "?"), float(r["value"][1])) for r in self.prom.query(promql)
        )
        return " ".join(f"v{v} {x:.3f}" for v, x in rows) or "-"

    @staticmethod
    def _series(
        prom: PrometheusServer, promql: str, start: float, end: float
    ) -> dict[str, list[tuple[float, float]]]:
        """``{version: [(t, value)]}`` of a range query by version."""
        return {
            s["metric"].get("version", "?"): [(float(t), float(v)) for t, v in s["values"]]
            for s in prom.query_range(promql, start, end, 2.0)
        }

    @staticmethod
    def _fired(prom: PrometheusServer, start: float, end: float) -> list[str]:
        """The alerts that fired between ``start`` and ``end``."""
        rows = prom.query_range('ALERTS{alertstate="firing"}', start, end, 2.0)
        return sorted({r["metric"].get("alertname", "?") for r in rows})

    def _drift_summary(self, t0: float, samples: Any, t_start: float) -> dict[str, Any]:
        m, tl, c = self.moments, self.timeline, self.dcfg
        prom = self.prom
        end = time.time()
        false_alarms = None
        drift_series: dict[str, list[tuple[float, float]]] = {}
        online_series: dict[str, list[tuple[float, float]]] = {}
        fired: dict[str, list[str]] = {}
        if prom is not None and m.drift_start is not None:
            step = 1.0
            firing = prom.query_range(
                f'ALERTS{{alertname="{DRIFT_ALERT}",alertstate="firing"}}', t0, m.drift_start, step
            )
            times = [float(t) for s in firing for t, _ in s["values"]]
            false_alarms = len(episodes(times, step))
            drift_series = self._series(
                prom, "max by (version) (edge_agent_input_drift_score)", t0, end
            )
            online_series = self._series(
                prom, "min by (version) (edgeinfer_online_accuracy)", t0, end
            )
            fired = {
                "undrifted": self._fired(prom, t0, m.drift_start),
                "drifted": self._fired(prom, m.drift_start, m.promoted or end),
                "after_promotion": self._fired(prom, m.promoted, end) if m.promoted else [],
            }
        detected_after = (
            tl.answered_between(tl.drift_start_ms, tl.detected_ms)
            if tl.drift_start_ms is not None and tl.detected_ms is not None
            else None
        )
        summary: dict[str, Any] = {
            "scenario": "drift",
            "drift": self.drift.describe(),
            "undrifted_s": c.undrifted_s,
            "accuracy_before_drift": accuracy(tl.before_drift()),
            "accuracy_during_drift": accuracy(tl.during_drift("1")),
            "accuracy_after_promotion": accuracy(tl.after_promotion("2")),
            "drift_detected_after_inputs": detected_after,
            "drift_detected_after_s": (m.detected - m.drift_start)
            if m.detected and m.drift_start
            else None,
            "false_drift_alarms": false_alarms,
            "alerts_fired": fired,
            "samples_captured": self._samples_captured(samples),
            "promoted_version": "2" if m.promoted is not None else None,
            "promoted_after_publish_s": (m.promoted - m.published)
            if m.promoted and m.published
            else None,
            "results": len(tl.answers),
            "elapsed_s": round(time.monotonic() - t_start, 1),
            "notes": m.notes,
            "plot": str(self.work / "drift.png"),
        }
        (self.work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        _plot(self.work / "drift.png", tl, drift_series, online_series, m)
        out = self.cfg.out
        out.write("\n=== edgeinfer drift scenario ===\n")
        for key in (
            "accuracy_before_drift",
            "accuracy_during_drift",
            "accuracy_after_promotion",
            "drift_detected_after_inputs",
            "false_drift_alarms",
            "samples_captured",
            "promoted_version",
        ):
            out.write(f"{key:<28} {summary[key]}\n")
        out.write(f"summary: {self.work / 'summary.json'}  plot: {self.work / 'drift.png'}\n")
        out.flush()
        return summary

    def stop(self) -> None:
        if self.prom is not None:
            self.prom.stop()
        super().stop()


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _plot(
    path: Path,
    tl: Timeline,
    drift: dict[str, list[tuple[float, float]]],
    online: dict[str, list[tuple[float, float]]],
    m: _Moments,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = min((a.sent_ms for a in tl.answers), default=0) / 1000
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    versions = sorted({a.version for a in tl.answers} | set(online) | set(drift))
    colour = {v: f"C{i}" for i, v in enumerate(versions)}  # one colour per version
    for version in versions:
        bins = accuracy_bins([a for a in tl.answers if a.version == version], 5.0)
        ax1.plot(
            [b[0] - t0 for b in bins],
            [b[1] for b in bins],
            ".",
            color=colour[version],
            label=f"v{version} results (5 s bins)",
        )
        series = online.get(version, [])
        ax1.plot(
            [t - t0 for t, _ in series],
            [v for _, v in series],
            "-",
            color=colour[version],
            alpha=0.6,
            label=f"v{version} online accuracy (edgeinfer monitor)",
        )
        series = drift.get(version, [])
        ax2.plot(
            [t - t0 for t, _ in series],
            [v for _, v in series],
            "-",
            color=colour[version],
            label=f"v{version} input drift score (PSI, max over agents)",
        )
    ax1.set_ylabel("accuracy")
    ax1.set_ylim(0, 1.02)
    ax2.set_ylabel("drift score")
    ax2.set_xlabel("seconds")
    for ax in (ax1, ax2):
        for when, what, style in (
            (m.drift_start, "drift starts", "--"),
            (m.detected, "drift alert", ":"),
            (m.published, "v2 published", "-."),
            (m.promoted, "v2 promoted", "-"),
        ):
            if when is not None:
                ax.axvline(when - t0, linestyle=style, color="grey")
                ax.text(when - t0, ax.get_ylim()[1], what, rotation=90, va="top", fontsize=7)
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_drift_demo(cfg: DriftConfig) -> dict[str, Any]:
    return run_with_signals(DriftDemo(cfg), "stopping agents, monitor, Prometheus and broker")
