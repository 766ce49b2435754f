"""The shadow worker (edge_agent/shadow.py) with stand-in runtimes: what the candidate does
never reaches the caller, the queue drops when full, work waits for spare time."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from edge_agent.batching import Pending
from edge_agent.metrics import AgentMetrics
from edge_agent.promotion import Gates
from edge_agent.shadow import Shadow
from stream.preprocessing import SequencePreprocessing

LABELS = ["a", "b"]
PREP = SequencePreprocessing(window=2, stride=2, channels=1, mean=[0.0], std=[1.0])


class Runtime:
    """Answers with ``answer(x)``; records that it ran and when it was closed."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls = 0
        self.closed = False

    def run(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.answer(x)

    def close(self) -> None:
        self.closed = True


def model(version: str, answer: Any, prep: Any = PREP) -> SimpleNamespace:
    manifest = SimpleNamespace(name="m", version=version, labels=LABELS)
    return SimpleNamespace(manifest=manifest, runtime=Runtime(answer), preprocessing=prep)


def items(n: int, label: str | None = "a") -> list[Pending]:
    headers = [("label", label.encode())] if label else []
    return [
        Pending(
            x=np.zeros((2, 1), np.float32),
            device_id="d",
            partition=0,
            offset=i,
            last_offset=i,
            window=True,
            ts=None,
            kafka_ts=0,
            headers=headers,
            consumed_at=0.0,
            key=None,
            value=None,
        )
        for i in range(n)
    ]


def serving_scores(n: int) -> np.ndarray:
    return np.tile(np.array([[0.9, 0.1]], np.float32), (n, 1))


def agreeing(x: np.ndarray) -> np.ndarray:
    return serving_scores(len(x))


def make(candidate: Any, registry: CollectorRegistry, **kw: Any) -> Shadow:
    gates = kw.pop("gates", Gates(min_inputs=4))
    return Shadow(
        candidate=candidate,
        serving_prep=PREP,
        gates=gates,
        share=kw.pop("share", 1.0),
        metrics=AgentMetrics(registry=registry),
        **kw,
    )


def offer(shadow: Shadow, n: int, label: str | None = "a") -> None:
    its = items(n, label)
    x = np.stack([it.x for it in its])
    shadow.offer(its, x, serving_scores(n), np.ones(n, bool), model("1", None), 1e-4)


def wait(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_an_agreeing_candidate_is_promoted_and_metrics_follow() -> None:
    reg = CollectorRegistry()
    shadow = make(model("2", agreeing), reg)
    shadow.spare.set()
    offer(shadow, 4, label=None)
    wait(lambda: shadow.decision is not None, "a decision")
    assert shadow.decision is not None
    assert (shadow.decision.result, shadow.decision.reason) == ("promoted", "agreement")
    labels = {"model": "m", "version": "2"}
    assert reg.get_sample_value("edge_agent_shadow_inputs_total", labels) == 4
    assert reg.get_sample_value("edge_agent_shadow_agreement_ratio", labels) == 1.0
    assert reg.get_sample_value("edge_agent_shadow_candidate_info", labels) == 1
    shadow.close(release=False)
    assert reg.get_sample_value("edge_agent_shadow_candidate_info", labels) is None
    assert not shadow.candidate.runtime.closed


@pytest.mark.parametrize(
    "answer",
    [
        lambda x: np.full((len(x), 2), np.nan, np.float32),
        lambda x: np.zeros((len(x), 7), np.float32),
        lambda x: 1 / 0,
    ],
    ids=["nan", "shape", "exception"],
)
def test_a_failing_candidate_is_rejected_for_errors_and_offer_never_raises(answer: Any) -> None:
    reg = CollectorRegistry()
    shadow = make(model("2", answer), reg)
    shadow.spare.set()
    offer(shadow, 3)
    wait(lambda: shadow.decision is not None, "a decision")
    assert shadow.decision is not None and shadow.decision.reason == "errors"
    assert (
        reg.get_sample_value("edge_agent_shadow_errors_total", {"model": "m", "version": "2"}) == 3
    )
    offer(shadow, 3)  # decided: ignored
    shadow.close()
    assert shadow.candidate.runtime.closed


def test_no_spare_time_means_no_candidate_work_and_a_full_queue_drops() -> None:
    reg = CollectorRegistry()
    candidate = model("2", agreeing)
    shadow = make(candidate, reg, queue_batches=2)
    offer(shadow, 4)
    wait(lambda: shadow._queue.empty(), "the worker to take the first job")
    for _ in range(4):
        offer(shadow, 4)
    time.sleep(0.1)
    assert candidate.runtime.calls == 0  # the serving loop never waited for input
    # one job taken by the worker (waiting for spare time), two queued, two dropped
    assert shadow.dropped == 8
    assert (
        reg.get_sample_value("edge_agent_shadow_dropped_total", {"model": "m", "version": "2"}) == 8
    )
    shadow.spare.set()
    wait(lambda: shadow.decision is not None, "a decision once there is spare time")
    shadow.close()


def test_a_candidate_with_other_inputs_is_rejected_at_once() -> None:
    other = SequencePreprocessing(window=3, stride=3, channels=1, mean=[0.0], std=[1.0])
    shadow = make(model("2", agreeing, prep=other), CollectorRegistry())
    assert shadow.decision is not None and shadow.decision.reason == "input_mismatch"
    offer(shadow, 2)
    shadow.close()


def test_share_shadows_about_that_share_of_inputs() -> None:
    reg = CollectorRegistry()
    shadow = make(model("2", agreeing), reg, share=0.25, seed=1, gates=Gates(min_inputs=10**6))
    shadow.spare.set()
    for _ in range(100):
        offer(shadow, 10)
        wait(lambda: shadow._queue.empty(), "the worker to keep up")
    wait(lambda: shadow.stats.inputs + shadow.dropped > 150, "the last jobs")
    shadow.close()
    assert 150 < shadow.stats.inputs + shadow.dropped < 350


def test_stop_returns_while_the_worker_waits_for_spare_time() -> None:
    shadow = make(model("2", agreeing), CollectorRegistry())
    offer(shadow, 4)
    done = threading.Event()
    threading.Thread(target=lambda: (shadow.stop(), done.set()), daemon=True).start()
    assert done.wait(5)
