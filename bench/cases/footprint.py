"""Footprint: agent cold start and peak RSS next to a process that imports TensorFlow.

Agent cold start: process start (``Popen``) to ``/readyz`` 200, the bundle on disk and the
broker up; also the time to its first HTTP answer (model loaded, health server up, group
not yet joined). Peak RSS is ``VmHWM`` after it has answered a few hundred frames. The
TensorFlow process imports TensorFlow, loads the same model with Keras and predicts once.
"""

from __future__ import annotations

import select
import time
from typing import Any

from bench.assets import frames, mobilenet_models
from bench.exceptions import BenchError
from bench.harness import Harness, rss_split, smaps_top
from bench.kafka_io import ResultsReader, preload
from bench.messages import jpeg_messages
from bench.procs import Child, python_command
from bench.stats import median, rounded

#: Frames the agent answers before its peak RSS is read.
RSS_FRAMES = 200


def run(h: Harness) -> None:
    ms = mobilenet_models(h)
    bundle = ms.bundles["int8"]
    colds: list[float] = []
    http_up: list[float] = []
    agent_rss: float | None = None
    memory: dict[str, Any] = {}
    for i in range(h.config.footprint_repeats):
        topics = h.topics(f"footprint-{i}")
        last = i == h.config.footprint_repeats - 1
        with ResultsReader(h.settings, topics.output) as reader:
            agent = h.agent(name=f"agent-footprint-{i}", bundle=bundle, topics=topics)
            try:
                cold, first = agent.wait_ready()
                colds.append(cold)
                if first is not None:
                    http_up.append(first)
                h.progress(
                    f"agent cold start {i + 1}: {cold:.3f} s to /readyz 200 "
                    f"(first HTTP answer {first or 0:.3f} s)"
                )
                if last:
                    preload(h.settings, topics.input, jpeg_messages(frames(), RSS_FRAMES))
                    reader.wait_for(
                        RSS_FRAMES, cap_s=120, check=agent.child.check_alive, label="footprint"
                    )
                    agent_rss = agent.child.peak_rss_mb()
                    memory = {
                        "status": rss_split(agent.child.pid),
                        "largest_mappings": smaps_top(agent.child.pid),
                    }
            finally:
                agent.child.stop()
    tf_cold, tf_rss, tf_memory = tf_process(h, ms.keras_path)
    cold_s = median(colds)
    h.summary.update(
        {
            "cold_start_s": rounded(cold_s),
            "peak_rss_mb": rounded(agent_rss, 1),
            "tf_cold_start_s": rounded(tf_cold),
            "tf_peak_rss_mb": rounded(tf_rss, 1),
        }
    )
    h.details["footprint"] = {
        "model": "mobilenetv2-96 int8 bundle (agent); the same model's .keras (TensorFlow)",
        "agent_cold_starts_s": [round(c, 3) for c in colds],
        "agent_first_http_answer_s": [round(c, 3) for c in http_up],
        "agent_peak_rss_mb": rounded(agent_rss, 1),
        "agent_memory": memory,
        "tf_cold_start_s": rounded(tf_cold),
        "tf_peak_rss_mb": rounded(tf_rss, 1),
        "tf_memory": tf_memory,
    }
    h.progress(
        f"footprint: agent {cold_s or 0:.2f} s / {agent_rss or 0:.0f} MB, "
        f"TensorFlow {tf_cold or 0:.2f} s / {tf_rss or 0:.0f} MB"
    )


def tf_process(h: Harness, keras_path: Any) -> tuple[float | None, float | None, dict[str, Any]]:
    """Cold start and peak RSS of ``import tensorflow`` + ``keras.models.load_model`` + predict."""
    child = Child(
        name="tensorflow-footprint",
        cmd=python_command("bench.loops", "tf-footprint", "--keras", str(keras_path)),
        log_path=h.logs / "tensorflow-footprint.log",
        cpus=[h.cpu],
        stdout_pipe=True,
    ).start()
    assert child.proc is not None and child.proc.stdout is not None
    try:
        deadline = time.perf_counter() + 300
        line = b""
        while time.perf_counter() < deadline:
            child.check_alive()
            ready, _, _ = select.select([child.proc.stdout], [], [], 0.05)
            if ready:
                line = child.proc.stdout.readline()
                if line.strip() == b"ready":
                    break
        if line.strip() != b"ready":
            msg = (
                f"the TensorFlow process did not load the model within 300 s; log: {child.log_path}"
            )
            raise BenchError(msg)
        cold = time.perf_counter() - child.started_at
        rss = child.peak_rss_mb()
        memory = {"status": rss_split(child.pid)}
    finally:
        child.stop()
    return cold, rss, memory
