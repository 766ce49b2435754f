"""Hostile input to a running agent (issue 10): whatever arrives, the agent keeps serving
and every input gets exactly one answer, a result or a dead letter.

Property-based (hypothesis): each example is a batch of drafted inputs (arbitrary JSON,
near-valid sensor chunks, arbitrary bytes, mutated images, hostile headers and keys; see
tests/fixtures/hostile.py) produced to ONE running agent process on the embedded broker,
then accounted for exactly (tests/fixtures/ledger.py, tests/fixtures/hostile_agent.py).
The agent is started once per test, not per example.

Models: tiny real LiteRT bundles (tests/fixtures/tiny_models.py). The sequence model is
float32 with window 4 and stride 2, so windows overlap and span several inputs, and
readings of 3e38 overflow it to NaN scores as in issue 10. The image model is int8, 8x8.

Tiers: the fast one (4 batches of 25-50 inputs per model, about 35 s for both models
with building them) runs in ``make test`` and ``make test-fast``; the long one (``-m
long``: ``make test-long``) sends 30 batches per model on each
Kafka client, with chunks of up to 10,000 readings. Both draw rare 200 kB headers. Each
test logs and records ``hostile_summary`` (inputs, kinds, crashes, unanswered, dead
letters by reason): ``pytest -o log_cli=true tests/integration/test_agent_hostile.py``,
or ``--junitxml``. Shrinking is off: a crashed agent cannot replay a smaller batch, so
the report names the unanswered inputs and the agent's last traceback instead.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.fixtures.agent import CLIENTS
from tests.fixtures.hostile import Draft, batches, image_drafts, sensor_drafts
from tests.fixtures.hostile_agent import HostileRig
from tests.fixtures.tiny_models import IMAGE_SIZE, TinyBundle

pytestmark = pytest.mark.integration

WINDOW, STRIDE, CHANNELS = 4, 2, 3


def tier(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        print_blob=True,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,  # one agent for all examples, on purpose
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


FAST = tier(4)
SLOW = tier(30)
#: Drafts per batch: hypothesis' choice buffer holds about 50 of them.
BATCH = 50


def drafts_for(model: str, *, max_rows: int) -> st.SearchStrategy[list[Draft]]:
    """A batch of drafts for the ``model`` ("sequence" or "image") under test."""
    if model == "sequence":
        drafts = sensor_drafts(channels=CHANNELS, max_rows=max_rows, giant=True)
    else:
        drafts = image_drafts(size=IMAGE_SIZE, giant=True)
    return batches(drafts, min_size=BATCH // 2, max_size=BATCH)


@pytest.fixture
def client() -> str:
    """The agent's Kafka client; the slow tier parametrizes it."""
    return "kafka-python"


@pytest.fixture
def rig(
    hostile_agent: Callable[..., HostileRig], tiny_bundle: TinyBundle, model: str, client: str
) -> HostileRig:
    """One agent for all the examples of a test."""
    if model == "sequence":
        bundle = tiny_bundle("sequence", window=WINDOW, stride=STRIDE, channels=CHANNELS)
    else:
        bundle = tiny_bundle("image")
    return hostile_agent(bundle, client=client)


@pytest.mark.parametrize("model", ["sequence", "image"])
@FAST
@given(data=st.data())
def test_agent_answers_every_hostile_input(
    rig: HostileRig, model: str, data: st.DataObject
) -> None:
    rig.run(data.draw(drafts_for(model, max_rows=64), label="batch"))


@pytest.mark.slow
@pytest.mark.long
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("model", ["sequence", "image"])
@SLOW
@given(data=st.data())
def test_agent_answers_every_hostile_input_long(
    rig: HostileRig, model: str, data: st.DataObject
) -> None:
    rig.run(data.draw(drafts_for(model, max_rows=10_000), label="batch"))
