"""The drift score on real data: quiet on an undrifted stream, loud on a drifted one.

The reference is what the trainer writes for the training split; the stream is the test
split (never trained on), shuffled, fed in batches as the agent does. These numbers are
the basis of the ``drift_threshold`` default (docs/agent.md "Monitoring and samples").
"""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.config import agent_config
from edge_agent.monitoring import ModelMonitor
from stream.datasets import Dataset, load_dataset
from trainer.reference import build_reference

#: The agent's default drift_threshold.
THRESHOLD = agent_config(flags={"bundle": "/b"}, environ={}).drift_threshold


def drift_scores(ds: Dataset, stream: np.ndarray, *, n: int = 1000) -> list[float]:
    """Every drift score published while ``stream`` (cycled to ``n`` inputs) is fed 8 at a time."""
    reference = build_reference(ds.x_train, ds.kind)
    mon = ModelMonitor(model="m", version="1", reference=reference, window=200)
    x = np.concatenate([stream] * (n // len(stream) + 1))[:n]
    scores = []
    for i in range(0, n, 8):
        mon.observe(x[i : i + 8], np.full(len(x[i : i + 8]), 0.9))
        drift = mon.snapshot().drift
        if drift is not None:
            scores.append(drift)
    return scores


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def motions() -> Dataset:
    return load_dataset("basic-motions")


def shuffled(x: np.ndarray) -> np.ndarray:
    return x[np.random.default_rng(0).permutation(len(x))]


def test_undrifted_streams_stay_far_below_the_threshold(digits: Dataset, motions: Dataset) -> None:
    for ds in (digits, motions):
        scores = drift_scores(ds, shuffled(ds.x_test))
        assert max(scores) < THRESHOLD / 3, ds.name


def test_darker_frames_are_a_significant_shift(digits: Dataset) -> None:
    darker = (digits.x_test.astype(np.float32) * 0.7).astype(np.uint8)
    assert drift_scores(digits, shuffled(darker))[-1] > 0.25


def test_sensor_offset_and_gain_changes_cross_the_threshold(motions: Dataset) -> None:
    offset = motions.x_test.copy()
    offset[:, :, 0] += 2.0
    assert drift_scores(motions, shuffled(offset))[-1] > 0.25
    gain = motions.x_test.copy()
    gain[:, :, :3] *= 1.5  # the accelerometer's three axes
    assert drift_scores(motions, shuffled(gain))[-1] > THRESHOLD


def test_a_rotated_frame_has_the_same_pixels(digits: Dataset) -> None:
    """What the pixel statistic cannot see (docs/agent.md): rotation keeps the histogram."""
    rotated = np.rot90(digits.x_test, axes=(1, 2)).copy()
    assert max(drift_scores(digits, shuffled(rotated))) < THRESHOLD / 3
