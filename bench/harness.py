"""What every case shares: the broker, the cores, the model cache, and one way to measure.

A *contender* is a child process that consumes an input topic and writes one result per
input to an output topic. :meth:`Harness.run_preloaded` preloads the input, starts the
contender and measures its steady-state rate from the results' timestamps;
:meth:`Harness.run_paced` warms a contender with probes, then produces at a fixed rate and
measures end-to-end latency.

Why one module of this size: the harness is one object with one life cycle (broker, core
pinning, model cache, contender processes, the two ways to measure); its parts share the
harness's state and are read together when a figure looks wrong. The pieces with a home
elsewhere are already there (bench/procs.py, bench/kafka_io.py, bench/stats.py,
fleet/scrape.py).
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.config import BenchConfig
from bench.exceptions import BenchError
from bench.kafka_io import ResultsReader, fresh_topics, preload, produce_paced, unique_topic
from bench.messages import Message
from bench.models import ModelSet
from bench.procs import Child, pin_command, pin_tree, python_command, status_kb
from bench.stats import percentile, rounded, steady_rate
from fleet.scrape import NotReady, http_get, metric_sums, wait_ready
from stream.broker import EmbeddedBroker, free_port
from stream.settings import KafkaSettings

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Topics:
    input: str
    output: str
    deadletter: str
    group: str


@dataclass
class Run:
    """One measured run of one contender."""

    label: str
    per_s: float | None
    results: int
    expected: int
    seconds: float
    peak_rss_mb: float | None = None
    cold_start_s: float | None = None
    e2e_p50_ms: float | None = None
    e2e_p99_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "per_s": rounded(self.per_s, 1),
            "results": self.results,
            "expected": self.expected,
            "seconds": rounded(self.seconds, 2),
            "peak_rss_mb": rounded(self.peak_rss_mb, 1),
            "cold_start_s": rounded(self.cold_start_s, 3),
            "e2e_p50_ms": rounded(self.e2e_p50_ms, 2),
            "e2e_p99_ms": rounded(self.e2e_p99_ms, 2),
            **self.extra,
        }


@dataclass
class AgentChild:
    child: Child
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def scrape(self) -> dict[str, float]:
        """Sums over label sets of the agent's counters and histograms ({} if unreachable)."""
        status, text = http_get(f"{self.url}/metrics", timeout=5)
        if status != 200:
            return {}
        try:
            return metric_sums(text)
        except ValueError:  # not the exposition format
            return {}

    def wait_ready(
        self, timeout_s: float = 90.0, poll_s: float = 0.005
    ) -> tuple[float, float | None]:
        """(seconds to /readyz 200, seconds to the first HTTP answer of any status)."""
        try:
            (ready,) = wait_ready(
                [self.url],
                timeout_s=timeout_s,
                check=self.child.check_alive,
                poll_s=poll_s,
                request_timeout_s=0.5,
            ).values()
        except NotReady as exc:
            msg = (
                f"{self.child.name} was not ready ({self.url}/readyz) within {timeout_s:.0f} s; "
                f"its log ({self.child.log_path}) ends with:\n{self.child.log_tail()}"
            )
            raise BenchError(msg) from exc
        started = self.child.started_at
        return ready.ready - started, ready.first_answer - started


@dataclass
class Harness:
    config: BenchConfig
    out: Path
    settings: KafkaSettings
    cpu: int
    other_cpus: list[int]
    progress: Progress
    #: Every core this run may use (read before anything was pinned).
    all_cpus: list[int] = field(default_factory=list)
    broker_pid: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    #: Per headline key with several alternations: ``bench.stats.spread`` of their values.
    spreads: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    cache_models: dict[str, ModelSet] = field(default_factory=dict)
    capacity: dict[str, float] = field(default_factory=dict)
    _agent_help: str | None = None

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    @property
    def cache(self) -> Path:
        return self.out / "cache"

    # ------------------------------------------------------------------ cores

    def pin_background(self, cpus: Sequence[int] | None) -> None:
        """Pin the broker and this process (every thread) to ``cpus`` (None: all cores)."""
        import os

        target = (
            list(cpus) if cpus else sorted(set(self.all_cpus) | set(self.other_cpus) | {self.cpu})
        )
        if self.broker_pid is not None:
            pin_tree(self.broker_pid, target)
        pin_tree(os.getpid(), target)

    @contextmanager
    def own_broker(self, name: str) -> Iterator[None]:
        """Run the ``with`` body against a broker of its own, started now, pinned like the
        shared one; the shared broker is back afterwards. The embedded broker keeps
        everything it was sent in memory, and a case that measures the broker's answers
        (latency) should not depend on what the cases before it left there."""
        saved = self.settings, self.broker_pid
        with EmbeddedBroker(log_path=self.logs / f"broker-{name}.log") as broker:
            self.settings = replace(saved[0], bootstrap_servers=broker.bootstrap)
            self.broker_pid = broker.pid
            try:
                self.pin_background(self.other_cpus)
                self.progress(f"{name}: a broker of its own on {broker.bootstrap}")
                yield
            finally:
                self.settings, self.broker_pid = saved
                self.pin_background(self.other_cpus)

    # ------------------------------------------------------------------ topics

    def topics(self, prefix: str, partitions: int = 1) -> Topics:
        t = Topics(
            input=unique_topic(f"{prefix}.in"),
            output=unique_topic(f"{prefix}.out"),
            deadletter=unique_topic(f"{prefix}.dl"),
            group=unique_topic(f"{prefix}.group"),
        )
        fresh_topics(self.settings, [t.input], partitions=partitions)
        fresh_topics(self.settings, [t.output, t.deadletter], partitions=1)
        return t

    # ------------------------------------------------------------------ contenders

    def agent_help(self) -> str:
        if self._agent_help is None:
            proc = subprocess.run(
                python_command("stream", "agent", "--help"),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if proc.returncode != 0:
                msg = (
                    "`edgeinfer agent --help` failed: the agent is not installed or broken "
                    f"({proc.stderr.strip()[-400:]})"
                )
                raise BenchError(msg)
            self._agent_help = proc.stdout
        return self._agent_help

    def agent(
        self,
        *,
        name: str,
        bundle: Path,
        topics: Topics,
        cpus: Sequence[int] | None = None,
        wrap: Sequence[str] = (),
        agent_id: str | None = None,
        client: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> AgentChild:
        """Start ``edgeinfer agent`` (``python -m stream agent``) pinned to ``cpus``;
        ``client`` picks its Kafka library (``--client``; None = the agent's default);
        ``extra_args`` are more agent flags (e.g. ``--no-monitor``)."""
        help_text = self.agent_help()
        port = free_port()
        cmd = python_command(
            "stream",
            "agent",
            "--bundle",
            str(bundle),
            "--input",
            topics.input,
            "--output",
            topics.output,
            "--deadletter",
            topics.deadletter,
            "--group",
            topics.group,
            "--metrics-port",
            str(port),
            "--threads",
            str(self.config.threads),
            "--max-batch",
            str(self.config.max_batch),
            "--max-latency-ms",
            str(self.config.max_latency_ms),
            "--bootstrap-servers",
            self.settings.bootstrap_servers,
        )
        if "--metrics-host" in help_text:
            cmd += ["--metrics-host", "127.0.0.1"]
        if "--state-dir" in help_text:
            cmd += ["--state-dir", str(self.cache / "agent-state" / topics.group)]
        if "--allow-unsigned" in help_text:  # the bench measures speed; its bundles are unsigned
            cmd += ["--allow-unsigned"]
        if agent_id and "--agent-id" in help_text:
            cmd += ["--agent-id", agent_id]
        if client is not None:
            if "--client" not in help_text:
                msg = f"this agent has no --client option (asked for {client})"
                raise BenchError(msg)
            cmd += ["--client", client]
        cmd += list(extra_args)
        pinned = pin_command(cmd, [self.cpu] if cpus is None else cpus)
        child = Child(
            name=name, cmd=[*wrap, *pinned], log_path=self.logs / f"{_slug(name)}.log"
        ).start()
        return AgentChild(child=child, port=port)

    def loop(
        self,
        *,
        name: str,
        mode: str,
        topics: Topics,
        bundle: Path | None = None,
        keras: Path | None = None,
        work: str = "decode",
        cpus: Sequence[int] | None = None,
    ) -> Child:
        """Start a ``bench.loops`` contender (passthrough, confluent, naive)."""
        args = [
            mode,
            "--bootstrap-servers",
            self.settings.bootstrap_servers,
            "--input",
            topics.input,
            "--output",
            topics.output,
            "--group",
            topics.group,
            "--work",
            work,
            "--max-batch",
            str(self.config.max_batch),
            "--commit-every",
            str(self.config.naive_commit_every),
        ]
        if bundle is not None:
            args += ["--bundle", str(bundle)]
        if keras is not None:
            args += ["--keras", str(keras)]
        return Child(
            name=name,
            cmd=python_command("bench.loops", *args),
            log_path=self.logs / f"{_slug(name)}.log",
            cpus=[self.cpu] if cpus is None else cpus,
        ).start()

    # ------------------------------------------------------------------ measurements

    def run_preloaded(
        self,
        *,
        label: str,
        prefix: str,
        messages: Sequence[Message],
        start: Callable[[Topics], Child | AgentChild],
        partitions: int = 1,
        expected: int | None = None,
        cap_s: float | None = None,
        idle_s: float = 60.0,
    ) -> Run:
        """Preload ``messages``, start the contender, measure its steady-state rate."""
        topics = self.topics(prefix, partitions)
        preload(self.settings, topics.input, messages, partitions=partitions)
        want = expected if expected is not None else len(messages)
        self.progress(f"{label}: {len(messages)} messages preloaded, starting")
        started = time.perf_counter()
        with ResultsReader(self.settings, topics.output) as reader:
            handle = start(topics)
            child = handle.child if isinstance(handle, AgentChild) else handle
            cold: float | None = None
            scraped: dict[str, float] = {}
            cpu0: float | None = None
            cpu1: float | None = None
            try:
                if isinstance(handle, AgentChild):
                    cold, _ = handle.wait_ready()
                cpu0 = cpu_seconds(child.pid)
                reader.wait_for(
                    want,
                    cap_s=cap_s or self.config.measure_cap_s,
                    idle_s=idle_s,
                    check=child.check_alive,
                    progress=self.progress,
                    label=label,
                )
                cpu1 = cpu_seconds(child.pid)
                rss = child.peak_rss_mb()
                if isinstance(handle, AgentChild):
                    scraped = handle.scrape()
            finally:
                child.stop()
            times = reader.times()
            e2e = reader.e2e()
        per_s = steady_rate(times)
        extra = agent_efficiency(scraped, per_s) if scraped else {}
        if cpu0 is not None and cpu1 is not None and times:
            # CPU the contender used per result, from ready to the last result: what a
            # busy machine inflates far less than the wall-clock rate.
            extra["cpu_us_per_result"] = round((cpu1 - cpu0) / len(times) * 1e6, 1)
        run = Run(
            label=label,
            per_s=per_s,
            results=len(times),
            expected=want,
            seconds=time.perf_counter() - started,
            peak_rss_mb=rss,
            cold_start_s=cold,
            e2e_p50_ms=percentile(e2e, 50),
            e2e_p99_ms=percentile(e2e, 99),
            extra=extra,
        )
        share = extra.get("inference_share")
        note = f", {share:.0%} of its time in inference" if share else ""
        self.progress(f"{label}: {_fmt_rate(per_s)} ({len(times)} results{note})")
        return run

    def warm(
        self,
        reader: ResultsReader,
        topics: Topics,
        make: Callable[[int, int], Message],
        *,
        child: Child,
        partitions: int = 1,
        agents: int = 1,
        timeout_s: float = 120.0,
    ) -> int:
        """Send probes (one per partition, every 2 s) until contenders answered every probe
        and ``agents`` distinct ones answered; returns how many probes were sent.

        Waiting for every probe's answer means no probe is still queued when the measured
        load starts (a slow starter such as the TensorFlow loop gets a few probes at most).
        """
        deadline = time.monotonic() + timeout_s
        sent = 0
        start_count = reader.count
        next_probe = 0.0
        while time.monotonic() < deadline:
            child.check_alive()
            now = time.monotonic()
            if now >= next_probe:
                msgs = [
                    make(1_000_000 + sent + p, int(time.time() * 1000)) for p in range(partitions)
                ]
                _send(self.settings, topics.input, msgs, partitions)
                sent += partitions
                next_probe = now + 2.0
            reader.poll(timeout_ms=100)
            seen = {o.agent_id for o in reader.observations[start_count:]}
            if reader.count - start_count >= sent and len(seen) >= agents:
                return sent
        msg = (
            f"no answer to the probes from {agents} contender(s) within {timeout_s:.0f} s; "
            f"log: {child.log_path}"
        )
        raise BenchError(msg)

    def paced_step(
        self,
        reader: ResultsReader,
        topics: Topics,
        make: Callable[[int, int], Message],
        *,
        rate: float,
        seconds: float,
        check: Callable[[], None],
        partitions: int = 1,
        drain_s: float | None = None,
    ) -> dict[str, Any]:
        """Produce at ``rate`` for ``seconds``; wait for the step's results; latency stats."""
        # Floored: a device stamps ts as int(time.time() * 1000), so a send in the same
        # millisecond as t0 would otherwise fall outside the window (and be waited for).
        t0 = float(math.floor(time.time() * 1000.0))
        before = reader.count
        run = produce_paced(
            self.settings, topics.input, make, rate=rate, seconds=seconds, partitions=partitions
        )
        sent, real_rate = run.sent, run.rate
        t1 = time.time() * 1000.0
        deadline = time.monotonic() + (drain_s if drain_s is not None else max(seconds * 2, 10.0))
        while time.monotonic() < deadline:
            check()
            reader.poll(timeout_ms=200)
            got = [o for o in reader.observations[before:] if o.ts is not None and t0 <= o.ts <= t1]
            if len(got) >= sent:
                break
        got = [o for o in reader.observations[before:] if o.ts is not None and t0 <= o.ts <= t1]
        e2e = [o.e2e_ms for o in got if o.e2e_ms is not None]
        achieved = steady_rate([o.produced_at for o in got], trim=0.05)
        return {
            "offered": round(rate, 2),
            "sent_rate": round(real_rate, 2),
            "sent": sent,
            "answered": len(got),
            "achieved": rounded(min(achieved, real_rate * 1.5) if achieved else None, 2),
            "p50": rounded(percentile(e2e, 50), 2),
            "p90": rounded(percentile(e2e, 90), 2),
            "p99": rounded(percentile(e2e, 99), 2),
            "max": rounded(max(e2e), 2) if e2e else None,
            "send_late_max_ms": run.late_max_ms,
        }


def agent_efficiency(m: dict[str, float], per_s: float | None) -> dict[str, Any]:
    """From the agent's own metrics: time in inference per input, mean batch, and the share
    of its wall time spent in inference at the measured rate (1.0 = no pipeline overhead).

    ``edge_agent_inference_duration_seconds`` covers preprocessing + LiteRT per batch, so
    this share does not depend on how busy the machine was: both sides slow down together.
    """
    infer_s = m.get("edge_agent_inference_duration_seconds_sum")
    samples = m.get("edge_agent_batch_size_sum")
    batches = m.get("edge_agent_batch_size_count")
    if not infer_s or not samples:
        return {}
    per_input_ms = infer_s / samples * 1000.0
    out: dict[str, Any] = {
        "agent_infer_ms_per_input": round(per_input_ms, 4),
        "agent_mean_batch": round(samples / batches, 2) if batches else None,
        "agent_infer_per_s": round(1000.0 / per_input_ms, 1),
    }
    if per_s:
        out["inference_share"] = round(per_s * per_input_ms / 1000.0, 4)
    return out


def _send(settings: KafkaSettings, topic: str, msgs: list[Message], partitions: int) -> None:
    from stream.kafka import make_producer

    producer = make_producer(settings, linger_ms=0, acks=1, enable_idempotence=False)
    try:
        for i, m in enumerate(msgs):
            producer.send(
                topic, value=m.value, key=m.key, headers=m.headers, partition=i % partitions
            )
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-")


def _fmt_rate(per_s: float | None) -> str:
    return "no rate" if per_s is None else f"{per_s:,.1f} msg/s"


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all threads), in seconds."""
    import os

    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def machine_cpu() -> dict[str, float]:
    """Seconds the whole machine spent busy (all cores), idle, and stolen by the hypervisor."""
    import os

    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return {}
    ticks = os.sysconf("SC_CLK_TCK")
    v = [int(x) for x in first[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = v
    return {
        "busy": (user + nice + system + irq + softirq) / ticks,
        "idle": (idle + iowait) / ticks,
        "steal": steal / ticks,
    }


def smaps_top(pid: int, top: int = 8) -> list[dict[str, Any]]:
    """The largest resident mappings of ``pid`` grouped by file ([anon] for the heap)."""
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return []
    sizes: dict[str, int] = {}
    current = "[anon]"
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
            path = parts[5] if len(parts) >= 6 else "[anon]"
            current = path.rsplit("/", 1)[-1] if path.startswith("/") else path
        elif parts[0] == "Rss:":
            sizes[current] = sizes.get(current, 0) + int(parts[1])
    ordered = sorted(sizes.items(), key=lambda kv: kv[1], reverse=True)[:top]
    return [{"mapping": k, "rss_mb": round(v / 1024, 1)} for k, v in ordered]


def rss_split(pid: int) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
        kb = status_kb(pid, key)
        out[key] = None if kb is None else round(kb / 1024, 1)
    return out


def python_version() -> str:
    return sys.version.split()[0]
