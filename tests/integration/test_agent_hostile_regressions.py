"""Regression tests for the inputs that stopped an agent (issue 10), one by one.

Each runs the real agent process on the embedded broker (tests/fixtures/hostile_agent.py)
with a tiny real model (tests/fixtures/tiny_models.py), sends the input, a valid one after
it, and checks: every input answered exactly once (the same ledger as the property test),
the expected dead-letter reason, and the agent still serving (process running, /healthz
and /readyz 200, the valid input after it answered by a result).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from stream import codecs, topics
from tests.fixtures.agent import CLIENTS
from tests.fixtures.hostile import LONE_SURROGATES, Hostile
from tests.fixtures.hostile_agent import HostileRig
from tests.fixtures.tiny_models import TinyBundle

pytestmark = pytest.mark.integration

StartRig = Callable[..., HostileRig]
CHANNELS = 3
JSON = ((topics.H_CONTENT_TYPE, b"application/json"),)


def chunk(device: str, rows: list[list[float]], ts: int = 1_718_000_000_000) -> Hostile:
    """A sensor chunk written the way a device would (ensure_ascii escapes surrogates)."""
    doc = {"device_id": device, "ts": ts, "samples": rows}
    key = device.encode("utf-8", "backslashreplace")
    return Hostile("regression", json.dumps(doc).encode(), key, JSON, doc)


def good_chunk(window: int, device: str = "good-0") -> Hostile:
    return chunk(device, [[0.5] * CHANNELS] * window, ts=1_718_000_000_001)


def reasons(rig: HostileRig, offset: int) -> list[str]:
    return [dict(rec.headers)[topics.H_ERROR_TYPE].decode() for rec in rig.dead_letters(offset)]


def answered_by_a_result(rig: HostileRig, offset: int) -> None:
    assert len(rig.results(offset)) == 1, f"the valid input {offset} has no single result"
    assert rig.dead_letters(offset) == []


# ------------------------------------------------------------------------ sensors


def test_a_lone_surrogate_device_id_does_not_stop_the_agent(
    hostile_agent: StartRig, tiny_bundle: TinyBundle
) -> None:
    """Valid JSON (``"\\ud800"``), a valid Python str: encoding the result's key crashed the
    agent and every agent of the group after it. A result or a dead letter are both fine."""
    rig = hostile_agent(tiny_bundle("sequence", window=4, channels=CHANNELS))
    rows = [[0.5] * CHANNELS] * 4
    rig.run_inputs([chunk(device, rows) for device in LONE_SURROGATES] + [good_chunk(4)])
    *bad, good = rig.last_offsets
    for offset in bad:
        assert len(rig.results(offset)) + len(rig.dead_letters(offset)) == 1
    answered_by_a_result(rig, good)


def test_readings_of_3e38_on_a_float32_model_are_dead_lettered_bad_model_output(
    hostile_agent: StartRig, tiny_bundle: TinyBundle
) -> None:
    """3e38 is inside float32, so the decoder accepts it; the model's softmax overflows to
    NaN scores and encoding the result raised, killing the agent."""
    rig = hostile_agent(tiny_bundle("sequence", window=4, channels=CHANNELS))
    rig.run_inputs([chunk("hot", [[3e38] * CHANNELS] * 4), chunk("cold", [[-3e38] * CHANNELS] * 4)])
    hot, cold = rig.last_offsets
    rig.run_inputs([good_chunk(4)])
    for offset in (hot, cold):
        assert reasons(rig, offset) == ["bad_model_output"]
        assert rig.results(offset) == []
    answered_by_a_result(rig, rig.last_offsets[0])
    assert rig.agent.metric("edge_agent_deadletters_total", {"reason": "bad_model_output"}) == 2


@pytest.mark.parametrize(
    ("head", "why"),
    [("sqrt", "NaN or infinite"), ("rank3", "shaped")],
    ids=["nan-output", "rank-3-output"],
)
def test_a_model_output_that_is_not_finite_or_mis_shaped_is_dead_lettered(
    hostile_agent: StartRig, tiny_bundle: TinyBundle, head: str, why: str
) -> None:
    """``sqrt`` outputs NaN for a window whose sum is negative (and finite scores otherwise);
    ``rank3`` outputs (N, window, classes) for every input, the sentinels' included."""
    rig = hostile_agent(tiny_bundle("sequence", window=1, channels=CHANNELS, head=head))
    rig.ledger.valid_means_result = head != "rank3"
    rig.run_inputs([chunk("neg", [[-1.0] * CHANNELS]), chunk("pos", [[1.0] * CHANNELS])])
    neg, pos = rig.last_offsets
    assert reasons(rig, neg) == ["bad_model_output"]
    (dl,) = rig.dead_letters(neg)
    assert why in dict(dl.headers)[topics.H_ERROR_MESSAGE].decode()
    if head == "sqrt":
        answered_by_a_result(rig, pos)
    else:
        assert reasons(rig, pos) == ["bad_model_output"]


def _peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    pytest.skip("no VmHWM in /proc (not Linux)")


MAX_GROWTH_BYTES = 48 * 1024 * 1024


def test_a_chunk_of_10000_readings_on_a_stride_1_model_stays_within_memory(
    hostile_agent: StartRig, tiny_bundle: TinyBundle
) -> None:
    """Window 1000, stride 1: the chunk fills 9,001 windows, 108 MB of float32 copies if they
    are made at once (they were). It must be answered (refused ``too_large``, or every
    window produced lazily) while the agent's peak memory grows by less than 48 MB."""
    rig = hostile_agent(tiny_bundle("sequence", window=1000, stride=1, channels=CHANNELS))
    rig.run_inputs([good_chunk(1000, device="warm-up")])
    before = _peak_rss_bytes(rig.agent.proc.pid)
    rows = [[0.25, -0.5, 1.0]] * 10_000
    rig.run_inputs([chunk("big", rows), good_chunk(1000)])
    big, good = rig.last_offsets
    growth = _peak_rss_bytes(rig.agent.proc.pid) - before
    dead = reasons(rig, big)
    assert dead == ["too_large"] or (dead == [] and len(rig.results(big)) == 9_001)
    answered_by_a_result(rig, good)
    assert growth < MAX_GROWTH_BYTES, f"peak RSS grew by {growth / 2**20:.0f} MiB"


# ------------------------------------------------------------------------- images


def png(label: str = "3") -> Hostile:
    value = codecs.encode_png(np.arange(64, dtype=np.uint8).reshape(8, 8))
    headers = tuple(codecs.image_headers("image/png", "cam-1", 1_718_000_000_000, label=label))
    return Hostile("regression", value, b"cam-1", headers, good=True)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_record_without_key_and_value_is_dead_lettered(
    hostile_agent: StartRig, tiny_bundle: TinyBundle, client: str
) -> None:
    """Kafka allows a record with neither key nor value; its dead letter has neither too,
    which kafka-python refuses to send (``Need at least one: key or value``)."""
    rig = hostile_agent(tiny_bundle("image"), client=client)
    rig.run_inputs([Hostile("regression", None, None), png()])
    empty, good = rig.last_offsets
    assert reasons(rig, empty) == ["missing_field"]
    answered_by_a_result(rig, good)
