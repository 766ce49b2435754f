"""``edgeinfer demo``: the whole system on one machine, with a live fleet view.

Starts the embedded broker, trains (or reuses) a sensor model (BasicMotions) and an image
model (digits), signs and publishes them to a registry, starts two agents per model as
separate processes in one consumer group each, replays the real datasets through them and
shows a live view. Midway it publishes a retrained digits model; the agents switch without
losing a message. It ends with a summary table and ``<workdir>/summary.json``.

Why one module of this size: the demo is one script-like sequence (broker, models,
registry, agents, replays, the mid-run swap, the summary) whose steps share the run's
processes and are read in order; the reusable parts live elsewhere (fleet/top.py,
fleet/scrape.py, stream/replay.py, stream/announcements.py).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from fleet.scrape import NotReady, wait_ready
from fleet.top import FleetView, render, scrape
from stream import topics
from stream.announcements import announce
from stream.broker import EmbeddedBroker, die_with_parent, free_port
from stream.bundle import generate_keys, verify_bundle
from stream.datasets import Dataset, load_dataset
from stream.exceptions import EdgeInferError
from stream.kafka import ensure_topics, make_producer, quiet_kafka_logs
from stream.preprocessing import SequencePreprocessing
from stream.registry import Registry
from stream.replay import ReplayStats, replay_images, replay_sensors
from stream.results import ResultsCollector
from stream.settings import KafkaSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ModelPlan:
    """One model of the demo: how to train it and where its inputs come from."""

    name: str
    dataset: str
    arch: str
    topic: str
    variant_preference: tuple[str, ...] = ("int8", "dynamic", "float16", "float32")
    train_args: tuple[str, ...] = ()


MOTIONS = ModelPlan(
    name="motions-gru",
    dataset="basic-motions",
    arch="gru",
    topic=topics.SENSORS,
)
DIGITS = ModelPlan(
    name="digits-cnn",
    dataset="digits",
    arch="cnn",
    topic=topics.IMAGES,
)


@dataclass(kw_only=True)
class DemoConfig:
    workdir: Path = Path("runs/demo")
    agents_per_model: int = 2
    partitions: int = 4
    sensor_rate: float = 400.0
    image_rate: float = 40.0
    sensor_repeat: int = 6
    image_repeat: int = 4
    refresh_s: float = 1.0
    retrain: bool = False
    timeout_s: float = 600.0
    out: TextIO = field(default=sys.stdout)


class DemoInterrupted(EdgeInferError):
    """Ctrl-C or SIGTERM: the demo stops its agents and broker and exits."""


@dataclass(frozen=True)
class Expected:
    """What the replays should get answered, derived from the datasets' test splits (one
    image each, one simulated device per sensor recording) and the sensor model's window."""

    images: int
    devices: int
    windows_per_device: int

    @property
    def windows(self) -> int:
        return self.devices * self.windows_per_device

    @classmethod
    def of(
        cls, cfg: DemoConfig, *, images: Dataset, sensors: Dataset, sensor_bundle: Path
    ) -> Expected:
        pre = verify_bundle(sensor_bundle, public_key=None).manifest.preprocessing
        if not isinstance(pre, SequencePreprocessing):
            msg = f"{sensor_bundle} is not a sensor model: its preprocessing is {pre}"
            raise EdgeInferError(msg)
        readings = int(sensors.x_test.shape[1]) * cfg.sensor_repeat  # per device
        windows = 1 + (readings - pre.window) // pre.stride if readings >= pre.window else 0
        return cls(
            images=len(images.x_test) * cfg.image_repeat,
            devices=len(sensors.x_test),
            windows_per_device=windows,
        )


class Demo:
    def __init__(self, config: DemoConfig) -> None:
        self.cfg = config
        self.work = config.workdir.resolve()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.agent_urls: dict[str, list[str]] = {}
        self.broker: EmbeddedBroker | None = None
        self._stop = threading.Event()
        self._replay_errors: list[BaseException] = []
        self._producers: list[Any] = []
        self.replays: dict[str, ReplayStats] = {}
        #: More `edgeinfer agent` options for every agent (the drift scenario's).
        self.agent_args: list[str] = []

    # ------------------------------------------------------------------ signals

    def _on_signal(self, signum: int, _frame: Any) -> None:
        # kafka-python swallows KeyboardInterrupt inside its network loop, so the demo
        # does not rely on it: a signal sets a flag every loop here checks.
        self._stop.set()

    def check_stop(self) -> None:
        if self._stop.is_set():
            msg = "stopped by Ctrl-C / SIGTERM: agents and broker shut down"
            raise DemoInterrupted(msg)

    # ------------------------------------------------------------------ output

    def say(self, text: str) -> None:
        self.cfg.out.write(f"[demo] {text}\n")
        self.cfg.out.flush()

    # ------------------------------------------------------------------ steps

    def _edgeinfer(self) -> list[str]:
        return [sys.executable, "-m", "stream"]

    def train(self, plan: ModelPlan, *, version: str, seed: int) -> Path:
        """Train ``plan`` (or reuse a finished run) and return the bundle to ship."""
        out = self.work / "train" / f"{plan.name}-v{version}"
        report = out / "report.json"
        if report.exists() and not self.cfg.retrain:
            self.say(f"reusing {plan.name} v{version} from {out}")
        else:
            self.say(f"training {plan.name} v{version} ({plan.arch} on {plan.dataset}) -> {out}")
            cmd = [
                *self._edgeinfer(),
                "train",
                "--dataset",
                plan.dataset,
                "--arch",
                plan.arch,
                "--name",
                plan.name,
                "--version",
                version,
                "--seed",
                str(seed),
                "--out",
                str(out),
                "--key",
                str(self.work / "keys" / "edgeinfer.key"),
                *plan.train_args,
            ]
            log = self.work / "logs" / f"train-{plan.name}-v{version}.log"
            t0 = time.monotonic()
            with log.open("wb") as fh:
                rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT)
            self.check_stop()
            if rc != 0:
                tail = log.read_text(errors="replace")[-2000:]
                msg = f"training {plan.name} failed (exit {rc}); log {log}:\n{tail}"
                raise EdgeInferError(msg)
            self.say(f"trained {plan.name} v{version} in {time.monotonic() - t0:.0f} s")
        data = json.loads(report.read_text())
        variants = data.get("variants", {})
        for variant in plan.variant_preference:
            if variants.get(variant, {}).get("publishable"):
                acc = variants[variant].get("accuracy")
                self.say(f"{plan.name} v{version}: shipping {variant} (test accuracy {acc:.3f})")
                return out / "bundles" / variant
        msg = f"no publishable variant in {report}; see {out / 'report.md'}"
        raise EdgeInferError(msg)

    def publish(self, bundle_dir: Path, settings: KafkaSettings) -> None:
        bundle = verify_bundle(bundle_dir, public_key=None)
        Registry(self.work / "registry").publish(bundle_dir)
        announce(settings, bundle_dir, topic=topics.MODELS)
        self.say(f"published {bundle.manifest.name} v{bundle.manifest.version} to the registry")

    def start_agent(self, plan: ModelPlan, index: int, settings: KafkaSettings) -> str:
        port = free_port()
        agent_id = f"{plan.name}-{index}"
        cmd = [
            *self._edgeinfer(),
            "agent",
            "--registry",
            str(self.work / "registry"),
            "--model",
            plan.name,
            "--input",
            plan.topic,
            "--group",
            f"demo-{plan.name}",
            "--agent-id",
            agent_id,
            "--metrics-port",
            str(port),
            "--public-key",
            str(self.work / "keys" / "edgeinfer.pub"),
            # a fresh state per run: the anti-rollback floor of the last run (digits v2)
            # must not stop this run's agents from starting on v1
            "--state-dir",
            str(self.work / "agent-state" / agent_id),
            "--bootstrap-servers",
            settings.bootstrap_servers,
            *self.agent_args,
        ]
        log = (self.work / "logs" / f"agent-{agent_id}.log").open("wb")
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the demo, which drains the agents
            preexec_fn=die_with_parent,  # and if the demo is killed, they go with it
        )
        self.procs.append(proc)
        return f"127.0.0.1:{port}"

    def wait_ready(self, urls: list[str], timeout_s: float = 60.0) -> None:
        def check() -> None:
            self.check_stop()
            for p in self.procs:
                if p.poll() is not None:
                    msg = f"an agent exited with code {p.returncode}; see {self.work / 'logs'}"
                    raise EdgeInferError(msg)

        try:
            wait_ready(urls, timeout_s=timeout_s, check=check, poll_s=0.2)
        except NotReady as exc:
            msg = f"{exc}; see logs"
            raise EdgeInferError(msg) from exc

    def wait_assigned(self, timeout_s: float = 60.0) -> None:
        """Wait until each model's group has spread all partitions over its agents."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_stop()
            if all(
                sum(scrape(u).partitions_assigned for u in urls) >= self.cfg.partitions
                for urls in self.agent_urls.values()
            ):
                return
            time.sleep(0.2)
        self.say("warning: consumer groups not settled yet; starting anyway")

    def _replay(
        self, name: str, fn: Any, settings: KafkaSettings, plan: ModelPlan, **kwargs: Any
    ) -> threading.Thread:
        """Replay the test split of ``kwargs["dataset"]`` onto ``plan``'s topic in a thread
        (``fn`` is :func:`replay_sensors` or :func:`replay_images`)."""
        # The demo owns the replay producers so that a stop can close them before the
        # broker goes away (otherwise their exit-time flush waits on a dead broker).
        producer = make_producer(settings)
        self._producers.append(producer)

        def run() -> None:
            try:
                self.replays[name] = fn(
                    settings=settings,
                    producer=producer,
                    topic=plan.topic,
                    split="test",
                    partitions=None,  # the demo created the topics
                    **kwargs,
                )
            except BaseException as exc:  # reported by the main loop
                self._replay_errors.append(exc)

        t = threading.Thread(target=run, name=f"replay-{name}", daemon=True)
        t.start()
        return t

    # ------------------------------------------------------------------ main

    def prepare(self, *stale: str) -> None:
        """The work folders, a fresh registry and agent state (plus ``stale`` subfolders),
        and a signing key pair (kept across runs)."""
        for sub in ("keys", "logs", "train"):
            (self.work / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("registry", "agent-state", *stale):
            shutil.rmtree(self.work / sub, ignore_errors=True)
        if not (self.work / "keys" / "edgeinfer.key").exists():
            generate_keys(
                self.work / "keys" / "edgeinfer.key", self.work / "keys" / "edgeinfer.pub"
            )
            self.say(f"generated a signing key pair in {self.work / 'keys'}")

    def start_broker(self, data_topics: list[str]) -> KafkaSettings:
        """Start the embedded broker with ``data_topics`` (``cfg.partitions`` each) and the
        one-partition ``models`` topic; the settings to reach it."""
        self.broker = EmbeddedBroker(log_path=self.work / "logs" / "broker.log")
        self.broker.start()
        self.say(f"embedded broker (Tansu) on {self.broker.bootstrap}")
        settings = KafkaSettings(bootstrap_servers=self.broker.bootstrap, session_timeout_ms=6000)
        ensure_topics(settings, data_topics, partitions=self.cfg.partitions)
        ensure_topics(settings, [topics.MODELS], partitions=1)
        return settings

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        t_start = time.monotonic()
        self.prepare()
        motions_v1 = self.train(MOTIONS, version="1", seed=1)
        digits_v1 = self.train(DIGITS, version="1", seed=1)
        digits_v2 = self.train(DIGITS, version="2", seed=2)

        settings = self.start_broker(
            [topics.SENSORS, topics.IMAGES, topics.RESULTS, topics.DEADLETTER]
        )
        self.publish(motions_v1, settings)
        self.publish(digits_v1, settings)

        for plan in (MOTIONS, DIGITS):
            self.agent_urls[plan.name] = [
                self.start_agent(plan, i, settings) for i in range(cfg.agents_per_model)
            ]
        all_urls = [u for urls in self.agent_urls.values() for u in urls]
        self.say(f"started {len(all_urls)} agents; waiting until they are ready")
        self.wait_ready(all_urls)
        self.wait_assigned()
        self.say("agents ready; replaying BasicMotions (sensors) and digits (images)")

        motions, digits = load_dataset(MOTIONS.dataset), load_dataset(DIGITS.dataset)
        expected = Expected.of(cfg, images=digits, sensors=motions, sensor_bundle=motions_v1)
        collector = ResultsCollector(settings=settings)
        view = FleetView(all_urls)
        sensors = self._replay(
            "sensors",
            replay_sensors,
            settings,
            MOTIONS,
            dataset=motions,
            rate=cfg.sensor_rate,
            repeat=cfg.sensor_repeat,
        )
        images = self._replay(
            "images",
            replay_images,
            settings,
            DIGITS,
            dataset=digits,
            rate=cfg.image_rate,
            repeat=cfg.image_repeat,
        )
        swapped = False
        next_draw = 0.0
        deadline = time.monotonic() + cfg.timeout_s
        while time.monotonic() < deadline:
            collector.poll(timeout_ms=int(cfg.refresh_s * 1000))
            self.check_stop()
            if self._replay_errors:
                raise self._replay_errors[0]
            digits_stats = collector.per_model.get(DIGITS.name)
            done_images = digits_stats.results if digits_stats else 0
            if not swapped and done_images >= expected.images // 2:
                self.say("midway: publishing retrained digits-cnn v2")
                self.publish(digits_v2, settings)
                swapped = True
            if self.cfg.out.isatty() or time.monotonic() >= next_draw:
                self._draw(collector, view)
                next_draw = time.monotonic() + 5.0
            if (
                not sensors.is_alive()
                and not images.is_alive()
                and self._complete(collector, expected)
            ):
                break
        summary = self._summary(collector, expected, t_start)
        collector.close()
        return summary

    @staticmethod
    def _answered(c: ResultsCollector) -> tuple[int, dict[str, int]]:
        """Images answered (result or dead letter) and sensor windows per device so far."""
        img = c.per_source.get(topics.IMAGES)
        sen = c.per_source.get(topics.SENSORS)
        return (len(img.answered) if img else 0), (dict(sen.windows_by_device) if sen else {})

    def _complete(self, c: ResultsCollector, expected: Expected) -> bool:
        answered_images, per_device = self._answered(c)
        return answered_images >= expected.images and sum(per_device.values()) >= expected.windows

    def _draw(self, c: ResultsCollector, view: FleetView) -> None:
        rows = view.refresh()
        lines = [render(rows, title=f"edgeinfer demo  ({time.strftime('%H:%M:%S')})"), ""]
        lines += _model_table(c, p50="e2e p50", p99="e2e p99")
        lines.append(
            f"dead letters: {c.stats.deadletters}  versions seen: {dict(c.stats.by_version)}"
        )
        text = "\n".join(lines)
        if self.cfg.out.isatty():
            self.cfg.out.write("\x1b[H\x1b[2J" + text + "\n")
        else:
            self.cfg.out.write(text + "\n\n")
        self.cfg.out.flush()

    def _summary(self, c: ResultsCollector, expected: Expected, t_start: float) -> dict[str, Any]:
        answered_images, per_device = self._answered(c)
        per = expected.windows_per_device
        missing_windows = sum(max(per - n, 0) for n in per_device.values()) + per * max(
            expected.devices - len(per_device), 0
        )
        summary: dict[str, Any] = {
            "elapsed_s": round(time.monotonic() - t_start, 1),
            "replayed": {
                k: {"sent": v.sent, "seconds": round(v.seconds, 1)} for k, v in self.replays.items()
            },
            "expected": {"images": expected.images, "sensor_windows": expected.windows},
            "lost": {
                "images": max(expected.images - answered_images, 0),
                "sensor_windows": missing_windows,
            },
            "models": {name: s.summary() for name, s in c.per_model.items()},
            "deadletters": c.stats.deadletters,
            "versions": dict(c.stats.by_version),
            "agent_versions": dict(c.stats.agent_version),
            "reports": {
                p.name: str(p / "report.md") for p in sorted((self.work / "train").iterdir())
            },
        }
        (self.work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        out = self.cfg.out
        out.write("\n=== edgeinfer demo summary ===\n")
        out.write("".join(f"{line}\n" for line in _model_table(c, p50="e2e p50 ms", p99="p99 ms")))
        out.write(f"versions served: {summary['versions']}\n")
        out.write(f"lost: {summary['lost']}   dead letters: {summary['deadletters']}\n")
        out.write(f"elapsed: {summary['elapsed_s']} s\n")
        out.write(f"summary: {self.work / 'summary.json'}\n")
        for name, path in summary["reports"].items():
            out.write(f"report {name}: {path}\n")
        out.flush()
        return summary

    def stop(self) -> None:
        quiet_kafka_logs()  # connection errors while everything shuts down are expected
        for producer in self._producers:
            try:
                producer.close(timeout=1)
            except Exception:  # noqa: BLE001  best effort on the way out
                logger.debug("closing a replay producer failed", exc_info=True)
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        for p in self.procs:
            try:
                p.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if self.broker is not None:
            self.broker.stop()


def _model_table(c: ResultsCollector, *, p50: str, p99: str) -> list[str]:
    """A header and one row per model: results, accuracy, end-to-end p50 and p99 (ms)."""
    w = len(p50) + 1
    lines = [f"{'model':<14} {'results':>8} {'accuracy':>9} {p50:>{w}} {p99:>8}"]
    for name, s in sorted(c.per_model.items()):
        lat = s.latency_percentiles("e2e")
        acc = f"{s.accuracy:.3f}" if s.accuracy is not None else "-"
        lines.append(
            f"{name:<14} {s.results:>8} {acc:>9} {lat.get('p50', 0):>{w}.1f} "
            f"{lat.get('p99', 0):>8.1f}"
        )
    return lines


def run_with_signals(demo: Demo, stopping: str) -> dict[str, Any]:
    """Run ``demo`` with Ctrl-C/SIGTERM turned into a clean stop; always stop its processes."""
    previous = {sig: signal.signal(sig, demo._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return demo.run()
    finally:
        demo.say(stopping)
        demo.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_demo_config(cfg: DemoConfig) -> dict[str, Any]:
    return run_with_signals(Demo(cfg), "stopping agents and broker")
