"""Slow inference does not get the agent thrown out of its group.

kafka-python heartbeats from a background thread, so a batch that takes longer than the
session timeout does not end the membership; only the gap between polls is bounded (by
max.poll.interval.ms), and the agent bounds it with max_poll_records. The real model runs
behind a delay (the model itself is the real LiteRT int8 bundle)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.model_store import ModelStore
from edge_agent.sources import BundleDirSource
from stream import codecs
from tests.fixtures.signing import TEST_SIGNING_KEY

pytestmark = pytest.mark.integration

DELAY_S = 2.0


class SlowRuntime:
    """The real runtime, DELAY_S slower per invoke."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.name = runtime.name
        self.input_spec = runtime.input_spec

    def run(self, x: np.ndarray) -> np.ndarray:
        time.sleep(DELAY_S)
        return self.runtime.run(x)

    def run_filled(self, n: int, fill: Any) -> np.ndarray:
        time.sleep(DELAY_S)
        return self.runtime.run_filled(n, fill)


class SlowStore:
    """A real ModelStore whose model answers slowly."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self.model: Any = None

    def load_initial(self, timeout_s: float) -> Any:
        real = self.store.load_initial(timeout_s)
        self.model = dataclasses.replace(real, runtime=SlowRuntime(real.runtime))
        return self.model

    def current(self) -> Any:
        return self.model

    def poll(self) -> Any:
        return None

    def close(self) -> None:
        self.store.close()


@pytest.mark.slow
def test_batches_longer_than_the_session_timeout_keep_the_membership(
    kafka_settings: Any,
    streaming_agent: Any,
    producer_factory: Any,
    digits_bundles: dict[str, Path],
    tmp_path: Path,
) -> None:
    store = SlowStore(
        ModelStore(
            source=BundleDirSource(digits_bundles["int8"]),
            model_name=None,
            public_key=TEST_SIGNING_KEY.public_key(),  # the bundle fixtures sign with it
            num_threads=1,
            pinned_version=None,
            metrics=None,
            state_dir=tmp_path / "state",
        )
    )
    # 4 records per poll, one per batch: 8 s of inference between two polls, more than
    # the 6 s session timeout, less than max_poll_interval_ms.
    run = streaming_agent(
        digits_bundles["int8"],
        store=store,
        max_batch=1,
        max_poll_records=4,
        max_poll_interval_ms=30_000,
    )
    agent, reader, inp, out = run.agent, run.reader, run.topics.input, run.topics.output
    assert kafka_settings.session_timeout_ms < 4 * DELAY_S * 1000
    revoked_before = agent.pipeline.revocations
    producer = producer_factory()
    png = codecs.encode_png(np.zeros((8, 8), np.uint8))
    n = 8
    for _ in range(n):
        producer.send(inp, value=png, key=b"cam", headers=[("content-type", b"image/png")])
    producer.flush()
    run.until(results=n, timeout_s=120)
    assert agent.pipeline.revocations == revoked_before, "the agent lost its partitions"
    assert agent.pipeline.assigned == {0}
    assert agent.stop() == 0
    store.close()  # a store passed in belongs to the caller
    reader.poll()
    offsets = sorted(codecs.decode_result(r.value).source["offset"] for r in reader.records[out])
    assert offsets == list(range(n))  # each once: no rebalance made anything run twice
