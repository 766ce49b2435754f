"""A streamed topic's first pass, without a broker: the stable split, the sums behind the
preprocessing, the bounded samples and the memory budget (``_FirstPass`` is the sink the
first pass feeds every input to)."""

from __future__ import annotations

from array import array

import numpy as np
import pytest

from stream.codecs import encode_png, image_headers
from trainer.capture import _Capture
from trainer.kafka_data import (
    _FirstPass,
    _Reservoir,
    place_hash,
    split_of,
)


def test_the_split_is_stable_and_close_to_its_fractions() -> None:
    places = [(p, o) for p in range(3) for o in range(4000)]
    splits = [split_of(pl, seed=7, test_fraction=0.25, validation_fraction=0.2) for pl in places]
    again = [split_of(pl, seed=7, test_fraction=0.25, validation_fraction=0.2) for pl in places]
    assert splits == again
    shares = {s: splits.count(s) / len(places) for s in ("train", "val", "test")}
    assert shares["test"] == pytest.approx(0.25, abs=0.02)
    assert shares["val"] == pytest.approx(0.75 * 0.2, abs=0.02)
    other = [split_of(pl, seed=8, test_fraction=0.25, validation_fraction=0.2) for pl in places]
    assert other != splits  # the seed chooses the split
    assert all(0.0 <= place_hash(pl, 0) < 1.0 for pl in places[:100])


def test_a_reservoir_keeps_a_bounded_uniform_sample() -> None:
    res = _Reservoir(50, np.random.default_rng(0))
    for i in range(10_000):
        res.add(np.array([i]), str(i))
    assert len(res.x) == 50 and res.seen == 10_000
    values = np.array([int(n) for n in res.names])
    assert len(set(values)) == 50 and values.mean() == pytest.approx(5000, rel=0.25)


def test_the_first_pass_gathers_the_statistics_of_the_training_inputs() -> None:
    rng = np.random.default_rng(1)
    sink = _FirstPass(seed=3, test_fraction=0.25, budget=None)
    xs = [rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8) for _ in range(400)]
    for i, x in enumerate(xs):
        sink(x, "ab"[i % 2], (0, i))
    fit = [x for i, x in enumerate(xs) if place_hash((0, i), 3) >= 0.25]
    flat = np.concatenate([x.reshape(-1, 3) for x in fit]).astype(np.float64) / 255
    assert sink.sums is not None and sink.squares is not None
    np.testing.assert_allclose(sink.sums / sink.values, flat.mean(axis=0))
    np.testing.assert_allclose(sink.squares / sink.values, np.square(flat).mean(axis=0))
    assert len(sink.fit_u) == len(fit) and sink.test.seen == 400 - len(fit)
    assert len(sink.kept) == 400 and not sink.overflow and sink.labels == {"a", "b"}


def test_over_the_budget_the_first_pass_keeps_nothing() -> None:
    sink = _FirstPass(seed=0, test_fraction=0.25, budget=1000)
    for i in range(30):
        sink(np.zeros((10, 10), np.float32), "a", (0, i))  # 400 bytes each
    assert sink.overflow and sink.kept == [] and sink.kept_names == []
    assert isinstance(sink.fit_u, array) and len(sink.fit_u) + sink.test.seen == 30


def test_one_message_inputs_of_other_splits_are_skipped_undecoded() -> None:
    png = encode_png(np.zeros((4, 4, 1), np.uint8))
    got: list[tuple[int, int]] = []
    cap = _Capture(topic="t", sink=lambda x, name, place: got.append(place))
    cap.want = lambda place: place[1] % 2 == 0
    for offset in range(6):
        cap.add(png, image_headers("image/png", "c", 1, label="a"), partition=0, offset=offset)
    cap.add(b"garbage", image_headers("image/png", "c", 1, label="a"), partition=0, offset=7)
    assert got == [(0, 0), (0, 2), (0, 4)]
    assert cap.undecodable == 0  # offset 7 is not wanted: never decoded
